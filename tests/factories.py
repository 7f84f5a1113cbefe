"""Small helpers that create data through the public API, as a client would."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

import httpx

PASSWORD = "correct-horse-9"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_counter = itertools.count(1)


@dataclass
class Account:
    username: str
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


class Api:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def register(self, username: str | None = None, *, password: str = PASSWORD) -> Account:
        username = username or f"user{next(_counter)}"
        email = f"{username.lower()}@example.com"
        response = await self.client.post(
            "/users", json={"user": {"username": username, "email": email, "password": password}}
        )
        assert response.status_code == 201, response.text
        return Account(username, email, password, response.json()["user"]["token"])

    async def article(
        self, author: Account, title: str = "How to train your dragon", **fields: Any
    ) -> dict[str, Any]:
        body = {"title": title, "description": "Ever wonder how?", "body": "You have to believe", **fields}
        response = await self.client.post("/articles", json={"article": body}, headers=author.headers)
        assert response.status_code == 201, response.text
        article: dict[str, Any] = response.json()["article"]
        return article

    async def comment(self, author: Account, slug: str, body: str = "Thank you so much!") -> dict[str, Any]:
        response = await self.client.post(
            f"/articles/{slug}/comments", json={"comment": {"body": body}}, headers=author.headers
        )
        assert response.status_code == 200, response.text
        comment: dict[str, Any] = response.json()["comment"]
        return comment


def assert_problem(
    response: httpx.Response, status: int, code: str, message: str | None = None
) -> dict[str, Any]:
    """Check that ``response`` is the problem document we expect and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    if message is not None:
        assert problem["errors"]["body"] == [message]
    return problem
