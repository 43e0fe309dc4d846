"""The ASGI application: routes wired to one :class:`Emulator`.

``create_app(config)`` is the only way to build an emulator app; its state is on
``app.state.emulator``.  Unknown ``/v1.0`` paths and methods answer with Graph-shaped errors so
a client's error mapping is exercised even by its own typos.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import routes_attachments as attachments
from . import routes_mail as mail
from .config import EmulatorConfig
from .emulator import Emulator
from .envelope import GraphEnvelopeMiddleware
from .errors import GraphError, error_response
from .gate import Handler, graph_endpoint
from .routes_admin import config_endpoint, files_endpoint, reset_endpoint, stats_endpoint
from .routes_upload import upload_endpoint

__all__ = ["create_app"]

_USER = "/v1.0/users/{user}"
_MESSAGE = _USER + "/messages/{message_id}"


def _graph_routes(emulator: Emulator) -> list[BaseRoute]:
    def graph(path: str, handler: Handler, method: str, *, sends: bool = False) -> Route:
        return Route(path, graph_endpoint(emulator, handler, sends=sends), methods=[method])

    return [
        graph(_USER + "/sendMail", mail.send_mail, "POST", sends=True),
        graph(_USER + "/messages", mail.list_messages, "GET"),
        graph(_USER + "/messages", mail.create_message, "POST"),
        graph(_USER + "/mailFolders/{folder}/messages", mail.list_folder_messages, "GET"),
        graph(_MESSAGE, mail.get_message, "GET"),
        graph(_MESSAGE, mail.patch_message, "PATCH"),
        graph(_MESSAGE, mail.delete_message, "DELETE"),
        graph(_MESSAGE + "/send", mail.send_draft, "POST", sends=True),
        graph(_MESSAGE + "/$value", mail.get_mime, "GET"),
        graph(_MESSAGE + "/attachments", attachments.list_attachments, "GET"),
        graph(_MESSAGE + "/attachments", attachments.add_attachment, "POST"),
        graph(_MESSAGE + "/attachments/createUploadSession", attachments.create_upload_session, "POST"),
        graph(_MESSAGE + "/attachments/{attachment_id}", attachments.get_attachment, "GET"),
        graph(_MESSAGE + "/attachments/{attachment_id}/$value", attachments.get_attachment_value, "GET"),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 405:
        error = GraphError(405, "BadRequest", f"The method {request.method} is not supported on this resource.")
    elif request.url.path.startswith("/v1.0/"):
        segment = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        error = GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
    else:
        error = GraphError(status, "NotFound", "No such emulator resource.")
    return error_response(request, error)


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    """Build the emulator app with fresh state; ``app.state.emulator`` is the :class:`Emulator`."""
    emulator = Emulator(config)
    routes = [
        *_graph_routes(emulator),
        Route("/upload/{session_id}", upload_endpoint, methods=["GET", "PUT", "DELETE"]),
        Route("/_emulator/config", config_endpoint, methods=["GET", "POST"]),
        Route("/_emulator/reset", reset_endpoint, methods=["POST"]),
        Route("/_emulator/stats", stats_endpoint, methods=["GET"]),
        Route("/_emulator/files/{rest:path}", files_endpoint, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(GraphEnvelopeMiddleware)],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.emulator = emulator
    return app
