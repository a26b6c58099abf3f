"""One error hierarchy for every part of labrun.

Each error carries the HTTP status and the machine-readable ``code`` it maps to, so the
server translates it in one place and the client turns a JSON error back into the same
class. Messages say what happened and what to do about it.
"""

from __future__ import annotations


class LabrunError(Exception):
    """Base of every error labrun raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(LabrunError):
    """The request (arguments, body, option) is malformed or not allowed."""

    status = 400
    code = "invalid_request"


class Unauthorized(LabrunError):
    """The caller is not authenticated, or the token is wrong."""

    status = 403
    code = "forbidden"


class TokenExpired(Unauthorized):
    """The token's lifetime is over (a worker asks its pool for a renewed one)."""

    code = "token_expired"


class NotFound(LabrunError):
    """A named thing (run, queue, dataset, artifact) does not exist."""

    status = 404
    code = "not_found"


class Conflict(LabrunError):
    """The request contradicts the current state (a finished run, a duplicate name)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(LabrunError):
    """The request body is larger than the server takes (``c.LabRun.max_body_size``)."""

    status = 413
    code = "too_large"


class ServerUnavailable(LabrunError):
    """The labrun server cannot be reached, or none could be found."""

    status = 503
    code = "server_unavailable"


class ServerError(LabrunError):
    """The server failed on its side (a 5xx): a bug, or an overload worth retrying."""

    status = 500
    code = "internal_error"


class StoreUnavailable(LabrunError):
    """The run store cannot be opened or written (a folder, a file or a database)."""

    status = 503
    code = "store_unavailable"


class SchemaMismatch(LabrunError):
    """The database was written by another labrun version."""

    status = 500
    code = "schema_mismatch"


_BY_CODE: dict[str, type[LabrunError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        TokenExpired,
        NotFound,
        Conflict,
        PayloadTooLarge,
        ServerUnavailable,
        StoreUnavailable,
        SchemaMismatch,
    )
}
_BY_STATUS: dict[int, type[LabrunError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
}


def error_from_response(status: int, code: str | None, message: str) -> LabrunError:
    """Rebuild the error a server answered with (used by the client)."""
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else LabrunError
    error = cls(message)
    if cls in (LabrunError, ServerError):
        error.status = status  # the server's own status, where no class stands for it
    return error
