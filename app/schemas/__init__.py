"""Pydantic models for every request and response body."""
