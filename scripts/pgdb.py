"""Create or drop a scratch PostgreSQL database: ``python -m scripts.pgdb create|drop URL NAME``.

``URL`` is any SQLAlchemy asyncpg URL on the server (its database is only used to connect).
"""

from __future__ import annotations

import asyncio
import re
import sys

import asyncpg


async def main(action: str, url: str, name: str) -> None:
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise SystemExit(f"refusing unsafe database name {name!r}")
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        if action == "create":
            await connection.execute(f'CREATE DATABASE "{name}"')
        elif action == "drop":
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            raise SystemExit("usage: python -m scripts.pgdb create|drop URL NAME")
    finally:
        await connection.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
