"""Domain errors shared by the layer and the functions. The HTTP layer maps each class
to one status code; domain code raises them without knowing about HTTP."""


class AppError(Exception):
    """Base of every error the API answers with its own code and message."""

    status = 400
    code = "bad_request"
    #: Seconds for the Retry-After header; every 503 gets one (UNAVAILABLE_RETRY_AFTER_S
    #: unless the error says otherwise).
    retry_after: int | None = None

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


class AccountDeleted(Unauthorized):
    """The token names an account that was deleted (its tombstone): every route answers
    401, and no request may provision it again."""

    code = "account_deleted"


#: The constraint name the database gives its refusal of a row for a deleted account
#: (trigger ``refuse_deleted_user``, migration 0012).
ACCOUNT_DELETED_CONSTRAINT = "account_deleted"


def is_account_deleted(exc: BaseException) -> bool:
    """True for ``AccountDeleted``, and for the database's refusal of a write for a
    deleted account (a request or a webhook that raced the deletion). Duck-typed on
    psycopg's ``diag``, so callers need not import psycopg."""
    if isinstance(exc, AccountDeleted):
        return True
    diag = getattr(exc, "diag", None)
    return getattr(diag, "constraint_name", None) == ACCOUNT_DELETED_CONSTRAINT


class SignatureError(AppError):
    """A webhook's signature (or shared authorization value) did not verify."""

    status = 401
    code = "invalid_signature"


class NotFound(AppError):
    """The thing does not exist, or belongs to someone else (the answer is the same, so
    existence is never revealed)."""

    status = 404
    code = "not_found"


class InvalidInput(AppError):
    """Well-formed request, unacceptable value (a malformed storage key, a content type
    outside the allow-list)."""

    status = 422
    code = "invalid_input"


class Conflict(AppError):
    """The request contradicts the current state (settling a refunded reservation, an
    idempotency key reused with different parameters)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class PaymentRequired(AppError):
    """The caller's plan or entitlement does not include this."""

    status = 402
    code = "payment_required"


class InsufficientCredits(PaymentRequired):
    """The balance does not cover the cost; nothing was charged."""

    code = "insufficient_credits"


class TooManyRequests(AppError):
    """A rate limit was hit; ``retry_after`` seconds until it resets (Retry-After)."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str = "Too many requests; slow down", *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


#: Retry-After of a 503 whose error names no other delay: long enough for a connection
#: to be re-made, short enough that a client retrying soon after a failover succeeds.
UNAVAILABLE_RETRY_AFTER_S = 5


class Unavailable(AppError):
    """A dependency (the database, a store) is briefly unavailable; retrying may work."""

    status = 503
    code = "unavailable"


class Misconfigured(Unavailable):
    """A setting of ours that a provider's delivery needs is missing or invalid: our outage
    (503 with Retry-After, the delivery kept in the inbox as ``failed`` to be applied by a
    redelivery or reconcile once it is set), not the sender's error. The message sent is
    generic; the caller logs an error naming the setting."""

    def __init__(self, setting: str):
        super().__init__("the service is briefly unavailable; retry shortly")
        self.setting = setting


class BadGateway(AppError):
    """A provider (OpenAI, Stripe, Paymob) answered with an error."""

    status = 502
    code = "provider_error"


class GatewayTimeout(AppError):
    """A provider did not answer in time."""

    status = 504
    code = "provider_timeout"


class ConfigError(RuntimeError):
    """A required setting is missing or invalid. Names the variable, never its value."""
