"""Domain errors; the HTTP edge maps each to its status and the error envelope."""


class HubError(Exception):
    status = 400
    reason = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(HubError):
    pass


class Unauthorized(HubError):
    status = 401
    reason = "unauthorized"


class Forbidden(HubError):
    status = 403
    reason = "forbidden"


class NotFound(HubError):
    status = 404
    reason = "not_found"


class Conflict(HubError):
    status = 409
    reason = "conflict"


class PayloadTooLarge(HubError):
    status = 413
    reason = "payload_too_large"


class Unavailable(HubError):
    status = 503
    reason = "service_unavailable"


class TooManyRequests(HubError):
    status = 429
    reason = "too_many_requests"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
