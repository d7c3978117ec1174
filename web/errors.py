"""The one error shape, `{"error": code, "detail": ...}`, and the middleware that renders it.

Handlers raise; they never build error JSON by hand. Storage errors and aiohttp's own HTTP
exceptions are mapped here, and anything unexpected becomes a 500 that leaks nothing but
the request id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import pydantic
import structlog
from aiohttp import web

from dispatcher import errors as dispatch
from storage.errors import Conflict as StorageConflict
from storage.errors import DatabaseUnavailable, InvalidValue
from web.middleware import REQUEST_ID
from web.statuses import CLIENT_CLOSED_REQUEST, client_gone

log = structlog.get_logger(__name__)


class ApiError(Exception):
    """Base of every error the API answers with; `code` is stable, `detail` is for humans."""

    # Class defaults; `status` may be given per instance for statuses without a class.
    status: int = 500
    code: ClassVar[str] = "internal_error"
    close_connection: ClassVar[bool] = False

    def __init__(
        self,
        detail: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        if status is not None:
            self.status = status
        self.detail = detail if detail is not None else self.__doc__
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class BadRequest(ApiError):
    """The request is malformed."""

    status, code = 400, "bad_request"


class ValidationFailed(ApiError):
    """Some fields are invalid."""

    status, code = 400, "invalid"


class NotAuthenticated(ApiError):
    """Authentication credentials were not provided or are not valid."""

    status, code = 401, "not_authenticated"

    def __init__(self, detail: Any = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        # RFC 9110: a 401 says which scheme would do (as Django REST framework's does).
        self.headers.setdefault("WWW-Authenticate", 'Token realm="api"')


class PermissionDenied(ApiError):
    """You do not have permission to perform this action."""

    status, code = 403, "permission_denied"


class NotFound(ApiError):
    """Not found."""

    status, code = 404, "not_found"


class MethodNotAllowed(ApiError):
    """Method not allowed."""

    status, code = 405, "method_not_allowed"


class Conflict(ApiError):
    """The request conflicts with the current state."""

    status, code = 409, "conflict"


class RequestTimeout(ApiError):
    """The request body did not arrive in time."""

    status, code = 408, "request_timeout"
    # RFC 9110 (15.5.9): the server closes the connection, whose unread rest is unknown.
    close_connection = True


class PayloadTooLarge(ApiError):
    """The request body is too large."""

    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    """The request body must be JSON."""

    status, code = 415, "unsupported_media_type"


class TooManyRequests(ApiError):
    """Too many attempts; retry later."""

    status, code = 429, "too_many_requests"


class ClientClosedRequest(ApiError):
    """The client closed the connection before its request was read."""

    status, code = CLIENT_CLOSED_REQUEST, "client_closed_request"


class ServiceUnavailable(ApiError):
    """The service cannot answer this right now; retrying later is safe."""

    status, code = 503, "unavailable"


def validation_detail(error: pydantic.ValidationError) -> list[dict[str, Any]]:
    """Name each failing field by its dotted path, with pydantic's message."""
    return [
        {
            "field": ".".join(str(part) for part in item["loc"]) or "body",
            "message": item["msg"],
            "type": item["type"],
        }
        for item in error.errors(include_url=False, include_context=False, include_input=False)
    ]


def from_dispatcher_error(error: dispatch.DispatcherError) -> ApiError:
    """The HTTP face of each dispatcher refusal; keep in sync with dispatcher/errors.py."""
    message = str(error)
    if isinstance(error, dispatch.Unavailable):
        return ServiceUnavailable(message, headers={"Retry-After": str(error.retry_after_s)})
    if isinstance(error, dispatch.SellRejected):
        rejected = {str(ticket): why for ticket, why in sorted(error.rejected.items())}
        return Conflict(message, extra={"rejected": rejected})
    if isinstance(error, dispatch.AgentNotAllowed):
        return PermissionDenied(message)
    if isinstance(error, dispatch.TicketNotFound | dispatch.AgentNotFound):
        return NotFound(message)
    if isinstance(error, dispatch.TicketHeld | dispatch.AgentHoldsTickets):
        return Conflict(message)
    return ApiError(message)


def error_response(error: ApiError) -> web.Response:
    body = {"error": error.code, "detail": error.detail, **error.extra}
    # The same Content-Type as every success (JSON is UTF-8 by definition: no charset).
    response = web.Response(
        body=json.dumps(body).encode(),
        status=error.status,
        headers=error.headers,
        content_type="application/json",
    )
    if error.close_connection:
        response.force_close()
    return response


_HTTP_EXCEPTIONS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: NotAuthenticated,
    403: PermissionDenied,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


# Headers of aiohttp's own answers that carry meaning: a 405 must say what is allowed.
_KEPT_HEADERS = ("Allow", "Retry-After")


def from_http_exception(exc: web.HTTPException) -> ApiError:
    headers = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
    kind = _HTTP_EXCEPTIONS.get(exc.status)
    if kind is None:
        return ApiError(exc.reason, headers=headers, status=exc.status)
    detail = None
    if exc.status == 413:
        detail = "The request body is larger than the limit of 1 MiB."
    return kind(detail, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except dispatch.DispatcherError as error:
        return error_response(from_dispatcher_error(error))
    except pydantic.ValidationError as error:
        return error_response(ValidationFailed(validation_detail(error)))
    except StorageConflict as error:
        return error_response(Conflict(str(error)))
    except InvalidValue as error:
        return error_response(ValidationFailed(str(error)))
    except DatabaseUnavailable:
        log.warning("database_unavailable", path=request.path)
        return error_response(ServiceUnavailable(headers={"Retry-After": "1"}))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(from_http_exception(exc))
    except Exception as error:
        if isinstance(error, ConnectionResetError) and client_gone(request):
            # The client went away while its body was read, so nothing of the request was
            # acted on. Not a server error: no traceback, and no 500 in the metrics.
            log.info("client_disconnected", path=request.path, request_id=request.get(REQUEST_ID))
            return error_response(ClientClosedRequest())
        log.exception(
            "unhandled_error",
            path=request.path,
            method=request.method,
            request_id=request.get(REQUEST_ID),
        )
        return error_response(ApiError("Internal error; quote the request id to support."))
