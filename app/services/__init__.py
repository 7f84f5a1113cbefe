"""Business logic and queries. Services take a session and plain values, flush but never commit,
and raise ``app.core.errors`` exceptions; they know nothing about HTTP."""
