"""Every API failure as ``{"error": {"code", "message"}}`` with a 4xx/5xx status, also for the
router's own 404/405 and aiohttp's 413."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import ValidationError

from bridge.infra.logs import log_event

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def not_found(what: str = "session") -> ApiError:
    """The same answer for "does not exist" and "not yours": a user learns nothing of others."""
    return ApiError(404, "not_found", f"no such {what}")


def invalid(error: ValidationError) -> ApiError:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return ApiError(422, "invalid", f"{where}: {first['msg']}")


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error.status, error.code, error.message)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = _CODES.get(error.status, "error")
        return error_response(error.status, code, error.reason)
    except Exception as error:
        log_event(
            logger,
            "api.error",
            level=logging.ERROR,
            method=request.method,
            path=request.path,
            error=f"{type(error).__name__}: {error}",
        )
        return error_response(500, "internal", "internal error; see the bridge log")
