"""Receiving one uploaded file: the multipart body is parsed as it streams in and the file part written
to a temporary file, counted as it goes.

Starlette's ``request.form()`` is not used: it has no cap on a file's size. Here the body is refused
with a 413 as soon as the file passes ``max_bytes`` (or the whole body passes that plus a little for
the multipart framing), whether or not a ``Content-Length`` was declared, and at most one small buffer
of it is ever in memory. Writes to the file run in a worker thread. The file's bytes are hashed
(SHA-256) as they pass, for the request's idempotency fingerprint (``app/api/v1/idempotency.py``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.core.errors import AppError, PayloadTooLargeError, UnsupportedMediaTypeError, ValidationFailedError

# Room for the boundaries, the part headers and small fields beside the file.
FRAMING_BYTES = 64 * 1024
WRITE_BUFFER = 256 * 1024  # bytes gathered before each write to the temporary file
FIELD = "file"


class _Receiver:
    """Collects the ``file`` part of a multipart body (the parser's callbacks)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buffer = bytearray()
        self.file_bytes = 0
        self.digest = hashlib.sha256()
        self.files = 0
        self.ended = False
        self._in_file = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""

    def on_part_begin(self) -> None:
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._in_file = options.get(b"name") == FIELD.encode()
        if self._in_file:
            self.files += 1
            if self.files > 1:
                raise ValidationFailedError.for_field(FIELD, "must be sent once")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            return  # other fields are ignored (their bytes still count against the body's cap)
        self.file_bytes += end - start
        if self.file_bytes > self.max_bytes:
            raise PayloadTooLargeError(f"the file exceeds {self.max_bytes} bytes")
        self.buffer += data[start:end]
        self.digest.update(data[start:end])

    def on_part_end(self) -> None:
        self._in_file = False

    def on_end(self) -> None:
        self.ended = True

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def _boundary(request: Request) -> bytes:
    media_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaTypeError(f"the body must be multipart/form-data, with the image in '{FIELD}'")
    return boundary


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    path: Path  # a temporary file, deleted when the request is done with it
    sha256: str  # of its bytes, hex


async def _receive(request: Request, out: BinaryIO, boundary: bytes, max_bytes: int) -> str:
    """Write the body's file part to ``out``; return the SHA-256 (hex) of its bytes."""
    body_cap = max_bytes + FRAMING_BYTES
    receiver = _Receiver(max_bytes)
    try:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": receiver.on_part_begin,
                "on_header_field": receiver.on_header_field,
                "on_header_value": receiver.on_header_value,
                "on_header_end": receiver.on_header_end,
                "on_headers_finished": receiver.on_headers_finished,
                "on_part_data": receiver.on_part_data,
                "on_part_end": receiver.on_part_end,
                "on_end": receiver.on_end,
            },
        )
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_cap:
                raise PayloadTooLargeError(f"the request body exceeds {body_cap} bytes")
            parser.write(chunk)
            if len(receiver.buffer) >= WRITE_BUFFER:
                await anyio.to_thread.run_sync(out.write, receiver.take())
        parser.finalize()
    except MultipartParseError:
        raise AppError("the multipart body is malformed") from None
    except ClientDisconnect:
        raise AppError("the upload was interrupted") from None
    if not receiver.ended:
        raise AppError("the multipart body is incomplete")
    if not receiver.files:
        raise ValidationFailedError.for_field(FIELD, "can't be blank")
    if not receiver.file_bytes:
        raise ValidationFailedError.for_field(FIELD, "is empty")
    await anyio.to_thread.run_sync(out.write, receiver.take())
    return receiver.digest.hexdigest()


@asynccontextmanager
async def receive_file(request: Request, *, max_bytes: int) -> AsyncIterator[ReceivedFile]:
    """The ``file`` field of the request's multipart body, as a temporary file deleted afterwards.

    415 if the body is not multipart; 413 past the caps; 422 if the field is missing, empty or repeated;
    400 if the body is malformed or cut short.
    """
    boundary = _boundary(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + FRAMING_BYTES:
        raise PayloadTooLargeError(f"the request body exceeds {max_bytes + FRAMING_BYTES} bytes")
    descriptor, name = await anyio.to_thread.run_sync(partial(tempfile.mkstemp, prefix="conduit-upload-"))
    path = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as out:
            sha256 = await _receive(request, out, boundary, max_bytes)
        yield ReceivedFile(path, sha256)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(partial(path.unlink, missing_ok=True))
