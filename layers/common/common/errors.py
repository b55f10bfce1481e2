"""Domain errors shared by the layer and the functions. The HTTP layer maps each class
to one status code; domain code raises them without knowing about HTTP."""


class AppError(Exception):
    """Base of every error the API answers with its own code and message."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status


class Unauthorized(AppError):
    """Missing, malformed or invalid credentials. The message stays generic: it never
    says which check failed nor echoes the token (the log says why)."""

    status = 401
    code = "unauthorized"


class SignatureError(AppError):
    """A webhook's signature (or shared authorization value) did not verify."""

    status = 401
    code = "invalid_signature"


class ConfigError(RuntimeError):
    """A required setting is missing or invalid. Names the variable, never its value."""
