"""The HTTP layer: one page, its static files, a JSON API and the files of each batch.

Routes:
    GET  /                         the page
    GET  /static/...               our own CSS and JavaScript (nothing from a CDN)
    GET  /api/models               the models offered
    GET  /api/options?model=ID     keys, meters and tune types of a model's training tunes
    POST /api/generate             a JSON object of form fields -> a batch of tunes
    GET  /files/BATCH/NAME         a file the server wrote for a batch (?download=1 to save it)

A bad form value is 400 with `{"field": ..., "error": ...}`; a full queue is 503 with
`Retry-After`. Only `application/json` posts are read, so another web site's page cannot make a
visitor's browser start a batch (that needs a CORS preflight, which this server never grants).
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
from dataclasses import asdict
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from musicgen import __version__
from musicgen.errors import MusicgenError
from musicgen.web.forms import FieldError, GenerateRequest, parse_request
from musicgen.web.service import Service
from musicgen.web.worker import QueueFull

HERE = Path(__file__).parent
MAX_BODY = 64 * 1024  # bytes of form JSON: the opening is bounded far below this
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; media-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# An SVG opened on its own must not run anything it might hold.
FILE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
_TYPES = {
    ".abc": "text/vnd.abc; charset=utf-8",
    ".mid": "audio/midi",
    ".wav": "audio/wav",
    ".svg": "image/svg+xml",
}


def create_app(service: Service, allowed_hosts: list[str] | None = None) -> Starlette:
    """The ASGI app serving `service`.

    Args:
        service: the models, worker and files.
        allowed_hosts: Host headers answered (others get 400), against DNS rebinding; None
            accepts any (tests use "testserver").
    """
    templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescapes .html

    async def page(request: Request) -> Response:
        context = {
            "models": list(service.choices.values()),
            "limits": service.limits,
            "defaults": GenerateRequest(model=service.model_ids[0]),
            "version": __version__,
        }
        return templates.TemplateResponse(request, "index.html", context)

    async def models(request: Request) -> Response:
        rows = [{"id": c.id, "label": c.label} for c in service.choices.values()]
        return JSONResponse({"models": rows, "default": service.model_ids[0]})

    async def options(request: Request) -> Response:
        model_id = request.query_params.get("model", service.model_ids[0])
        try:
            found = await run_in_threadpool(service.options, model_id)
        except FieldError as exc:
            return JSONResponse(exc.as_json(), status_code=400)
        except MusicgenError as exc:
            return JSONResponse({"field": "model", "error": str(exc)}, status_code=400)
        return JSONResponse({"model": model_id, **found, "limits": asdict(service.limits)})

    async def generate(request: Request) -> Response:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return _error("form", "send the form as application/json", 415)
        body = await _bounded_body(request)
        if body is None:
            return _error("form", f"the form is larger than {MAX_BODY} bytes", 413)
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _error("form", "the body is not JSON", 400)
        try:
            form = parse_request(raw, service.model_ids, service.limits)
            await run_in_threadpool(service.check_header, form)
            batch = await service.generate(form)
        except FieldError as exc:
            return JSONResponse(exc.as_json(), status_code=400)
        except QueueFull:
            retry = service.retry_after()
            message = f"the server is busy; try again in {retry} s"
            return JSONResponse(
                {"field": "form", "error": message},
                status_code=503,
                headers={"Retry-After": str(retry)},
            )
        except MusicgenError as exc:
            return _error("model", str(exc), 500)
        return JSONResponse(batch)

    async def file(request: Request) -> Response:
        path = service.file(request.path_params["batch"], request.path_params["name"])
        if path is None:
            return _error("file", "no such file", 404)
        media_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        response = FileResponse(path, media_type=media_type or "application/octet-stream")
        if request.query_params.get("download"):
            response.headers["Content-Disposition"] = f'attachment; filename="{path.name}"'
        response.headers["Content-Security-Policy"] = FILE_POLICY
        return response

    routes = [
        Route("/", page),
        Route("/api/models", models),
        Route("/api/options", options),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/files/{batch}/{name}", file),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or ["*"])]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.stop()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.add_middleware(_SecurityHeaders)
    return app


def _error(field: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"field": field, "error": message}, status_code=status)


async def _bounded_body(request: Request) -> bytes | None:
    """The request body, or None once it passes MAX_BODY bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class _SecurityHeaders:
    """Adds the page's content policy and the no-sniffing headers to every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                extra = {
                    b"content-security-policy": PAGE_POLICY.encode(),
                    b"x-content-type-options": b"nosniff",
                    b"referrer-policy": b"no-referrer",
                    b"x-frame-options": b"DENY",
                    b"cache-control": b"no-store",
                }
                headers += [(k, v) for k, v in extra.items() if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
