"""The anchors every result is compared with, served like Conduit (uvicorn, uvloop, httptools, 1 worker):

- ``GET /hello``: a bare FastAPI endpoint returning a small Pydantic model (the framework's ceiling);
- ``GET /select?id=N``: one primary-key SELECT through an asyncpg pool, as a Pydantic model (the
  ceiling of any endpoint that touches PostgreSQL once);
- ``GET /busy?us=N``: the hello endpoint after ``N`` microseconds of CPU work, a reference for the
  latency tail of any single-process server whose event loop is saturated (not a target).

``uvicorn bench.anchor:app`` with ``BENCH_DSN`` set to a PostgreSQL DSN holding Conduit's tables.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

pool: asyncpg.Pool | None = None


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(os.environ["BENCH_DSN"], min_size=10, max_size=10)
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


class Hello(BaseModel):
    message: str


class UserRow(BaseModel):
    id: int
    username: str


@app.get("/hello")
async def hello() -> Hello:
    return Hello(message="hello, world")


@app.get("/select")
async def select_user(id: int) -> UserRow:
    assert pool is not None
    row = await pool.fetchrow("SELECT id, username FROM users WHERE id = $1", id)
    if row is None:
        raise HTTPException(404)
    return UserRow(id=row["id"], username=row["username"])


@app.get("/busy")
async def busy(us: int) -> Hello:
    deadline = time.perf_counter() + us / 1e6
    while time.perf_counter() < deadline:
        pass
    return Hello(message="hello, world")
