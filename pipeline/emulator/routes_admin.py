"""Control endpoints under ``/_emulator`` (no auth; this is a test tool).

* ``GET|POST /_emulator/config`` — read, or change with a partial JSON of config fields;
* ``POST /_emulator/reset`` — clear all state, keep the config;
* ``GET /_emulator/stats`` — see :mod:`.stats`;
* ``GET /_emulator/files/{size}/{seed}[/{name}][?fail_first=N]`` — a deterministic file to use
  as an attachment source (:mod:`.files`), streamed; its first ``N`` requests answer 503.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .bodies import read_json
from .emulator import Emulator
from .errors import GraphError, bad_request, error_response
from .faults import server_busy
from .files import MAX_FILE_BYTES, file_chunks

__all__ = ["config_endpoint", "files_endpoint", "reset_endpoint", "stats_endpoint"]

_CONFIG_BODY_LIMIT = 64 * 1024


def _emulator(request: Request) -> Emulator:
    emulator: Emulator = request.app.state.emulator
    return emulator


async def config_endpoint(request: Request) -> Response:
    """GET: the config; POST: apply a partial update, 200 with the result, 400 if invalid."""
    emulator = _emulator(request)
    if request.method == "POST":
        try:
            patch = await read_json(request, _CONFIG_BODY_LIMIT)
            if not isinstance(patch, dict):
                raise bad_request("The config patch must be a JSON object.")
            emulator.update_config(patch)
        except GraphError as error:
            return error_response(request, error)
        except ValidationError as exc:
            return error_response(request, bad_request(f"Invalid emulator config: {exc}"))
    return JSONResponse(emulator.config.model_dump())


async def reset_endpoint(request: Request) -> Response:
    """Clear mailboxes, sessions, throttling and stats."""
    emulator = _emulator(request)
    emulator.reset()
    return JSONResponse({"reset": True, "config": emulator.config.model_dump()})


async def stats_endpoint(request: Request) -> Response:
    """The statistics document."""
    return JSONResponse(_emulator(request).stats())


async def _stream(size: int, seed: str) -> AsyncIterator[bytes]:
    for chunk in file_chunks(size, seed):
        yield chunk


async def files_endpoint(request: Request) -> Response:
    """Stream ``size`` deterministic bytes for ``seed``, never holding the whole file."""
    parts = str(request.path_params["rest"]).strip("/").split("/")
    if len(parts) not in (2, 3) or not parts[0].isdigit() or not parts[1]:
        return error_response(request, GraphError(404, "ItemNotFound", "No such emulator file."))
    size, seed = int(parts[0]), parts[1]
    if size > MAX_FILE_BYTES:
        return error_response(request, bad_request(f"Files are limited to {MAX_FILE_BYTES} bytes."))
    fail_first = request.query_params.get("fail_first", "0")
    if not fail_first.isdigit():
        return error_response(request, bad_request("fail_first must be a non-negative integer."))
    if _emulator(request).should_fail_file(request.url.path, int(fail_first)):
        return error_response(request, server_busy())
    name = parts[2] if len(parts) == 3 else f"file-{size}-{seed}.bin"
    headers = {
        "Content-Length": str(size),
        "Content-Disposition": f'attachment; filename="{name}"',
    }
    return StreamingResponse(_stream(size, seed), media_type="application/octet-stream", headers=headers)
