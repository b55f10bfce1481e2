"""HTTP wiring for the client-facing function URLs: one Powertools resolver per function,
one error envelope, one exception-handler registry.

A function is a resolver, typed routes and one handler::

    from common import http
    app = http.make_resolver()

    @app.post("/entries")
    def create_entry(body: EntryIn) -> EntryOut:
        user = http.current_user(app)                 # 401 / 429, provisions the user
        return logic.create_entry(user.user_id, body)

    handler = http.make_handler(app)                  # logger + metrics + tracer around resolve

Every non-2xx answer has the body ``{"error": {"code": "snake_case", "message": "..."}}``
(422 adds ``fields``). The mapping lives in ``_register_errors`` only: ``AppError``
subclasses carry their status and code; Powertools' own errors (validation, unknown
route, bad JSON) and the idempotency utility's are translated there; a database outage
(``db.is_outage``) is 503 ``unavailable``; every 503 carries ``Retry-After``; anything
else is a 500 naming the request id, logged with its traceback, never echoed.

Input limits, checked before any route runs: the body's size (``max_body_bytes``, 413),
its JSON (``common.safejson``: depth, number length, no NUL or unpaired surrogate in a
string; 400 ``invalid_json``), its type (a validated body is JSON only: forms and any
other type are 415), and the path and query string (no NUL or unpaired surrogate; 400
``invalid_request``).

An answer replayed for a repeated ``Idempotency-Key`` carries ``Idempotent-Replayed:
true`` (Stripe's header), so a client can tell it from a fresh one.

CORS is the function URL's job (``FunctionUrlConfig.Cors`` in template.yaml, origins from
the ``AllowedOrigins`` parameter): Lambda answers preflights and adds the headers itself,
so the resolver must add none, or browsers see duplicated headers. ``make_resolver``
therefore has no CORS option and a route asking for ``cors=True`` is refused when it is
declared. See docs/http.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.middlewares.openapi_validation import (
    OpenAPIRequestValidationMiddleware,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
    ResponseValidationError,
)
from pydantic import BaseModel, ConfigDict

from common import db, safejson
from common.errors import (
    UNAVAILABLE_RETRY_AFTER_S,
    AppError,
    PayloadTooLarge,
    Unauthorized,
    is_account_deleted,
)
from common.observability import logger, metrics, service_name, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
    from aws_lambda_powertools.shared.types import AnyCallableT
    from aws_lambda_powertools.utilities.data_classes import LambdaFunctionUrlEvent

    from common.auth import Principal


#: Default request body limit (decoded bytes). Function URLs accept up to 6 MB.
MAX_BODY_BYTES = 1024 * 1024
#: How long a completed Idempotency-Key is remembered (Stripe keeps keys for 24 hours).
IDEMPOTENCY_TTL_S = 24 * 3600
#: Printable ASCII without spaces, like Stripe's keys; a UUID is the usual choice.
_MAX_KEY_LENGTH = 255
#: The response header that marks an answer replayed for a repeated Idempotency-Key.
REPLAYED_HEADER = "Idempotent-Replayed"


class ApiModel(BaseModel):
    """The base of the routes' request and response models.

    ``defer_build``: pydantic builds a model's validator and serializer when the model is
    first used, not when its class is defined, so a cold start pays only for the models
    of the route it answers (the OpenAPI documents and validation are unchanged).
    """

    model_config = ConfigDict(defer_build=True)


class JsonBodyValidation(OpenAPIRequestValidationMiddleware):
    """Powertools' request validation, with JSON as the only body type.

    Powertools also parses form bodies (``application/x-www-form-urlencoded``, multipart)
    into the body model, so ``curl -d '{"a": 1}'`` (which sends a form content type) got
    a 422 naming the whole JSON text as a field. No route here takes a form: such a body
    is 415, like ``text/plain``, before anything parses it.
    """

    def _get_body(self, app: Any) -> dict[str, Any]:
        content_type = (app.current_event.headers.get("content-type") or "").strip()
        media = content_type.split(";", 1)[0].strip().lower()
        if media and media != "application/json":
            raise RequestUnsupportedContentType("Unsupported content type", errors=[])
        return super()._get_body(app)


class Resolver(LambdaFunctionUrlResolver):
    """A Function URL resolver that refuses per-route CORS (the function URL does CORS)
    and takes JSON bodies only (``JsonBodyValidation``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self._enable_validation:
            # The resolver keeps its request validation middleware here (pinned version)
            # Powertools' middleware constructor carries no annotations
            self._request_validation_middleware = JsonBodyValidation()  # type: ignore[no-untyped-call]

    def route(self, rule: str, method: Any, cors: bool | None = None, *args: Any,
              **kwargs: Any) -> Callable[[AnyCallableT], AnyCallableT]:
        if cors:
            raise ValueError(
                f"cors=True on {rule}: CORS is configured on the function URL in template.yaml; "
                "headers added here would be duplicated"
            )
        return super().route(rule, method, False, *args, **kwargs)


def make_resolver(*, max_body_bytes: int = MAX_BODY_BYTES) -> Resolver:
    """A resolver with request validation and the error registry, bodies over
    ``max_body_bytes`` refused with 413 before they are parsed."""

    def parse_json(text: str) -> Any:
        # Powertools parses the body lazily, through this function, whether the
        # validation middleware asks or a route reads json_body: check its size first.
        _check_body_size(app.current_event, max_body_bytes)
        return safejson.loads(text)

    app = Resolver(
        enable_validation=True,
        # A response that fails its own model is our bug: 500, not a 422 blaming the client.
        response_validation_error_http_code=HTTPStatus.INTERNAL_SERVER_ERROR,
        json_body_deserializer=parse_json,
        debug=False,  # debug mode prints whole events (tokens, bodies) and echoes tracebacks
    )

    def check_request(app: Resolver, next_middleware: NextMiddleware) -> Response[Any]:
        # Routes that read the raw body (webhooks, uploads) never go through parse_json.
        _check_body_size(app.current_event, max_body_bytes)
        _check_path_and_query(app.current_event)
        response = next_middleware(app)
        if app.context.get("idempotent_replayed"):
            response.headers[REPLAYED_HEADER] = "true"
        return response

    app.use([check_request])
    _register_errors(app)
    return app


def make_handler(app: LambdaFunctionUrlResolver) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Lambda handler for a resolver: the Powertools decorator stack around ``resolve``.

    Equivalent to writing in the function module::

        @logger.inject_lambda_context(correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL)
        @metrics.log_metrics
        @tracer.capture_lambda_handler(capture_response=False)
        def handler(event, context):
            return app.resolve(event, context)

    Responses are not captured into traces: they may hold users' content.
    """
    from aws_lambda_powertools.logging import correlation_paths

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL)
    @metrics.log_metrics
    @tracer.capture_lambda_handler(capture_response=False)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return app.resolve(event, context)

    return handler


# --- request helpers ---------------------------------------------------------------------


def route_key(app: LambdaFunctionUrlResolver) -> str:
    """``<service>:<METHOD> <rule>`` of the matched route, e.g. ``checkout:POST /orders``."""
    route = app.context.get("_route")
    rule = route.path if route is not None else app.current_event.path
    return f"{service_name()}:{app.current_event.http_method.upper()} {rule}"


def current_user(app: LambdaFunctionUrlResolver, *, route_limit: int | None = None) -> Principal:
    """The caller of this request: Bearer JWT verified (401), rate limit counted for the
    user on this route (429; ``route_limit`` requests a minute, default
    RATE_LIMIT_PER_MINUTE), users row provisioned. Cached for the rest of the request.

    Both are one statement (``auth.admit``): one round trip to the database. The rate
    limit is counted first; a throttled request provisions nothing.
    """
    from common import auth

    cached = app.context.get("principal")
    if isinstance(cached, auth.Principal):
        return cached

    principal = authenticated(app)
    auth.admit(principal, route_key(app), limit=route_limit)
    app.append_context(principal=principal)
    return principal


def current_user_along(app: LambdaFunctionUrlResolver, queries: dict[str, str], params: dict[str, Any], *,
                       route_limit: int | None = None) -> tuple[Principal, dict[str, Any] | None]:
    """``current_user``, with the scalar ``queries`` run in the admission's statement
    (``auth.admit_along``): a route whose first read is known from the token and the
    body pays no round trip of its own for it. The results are None when the request
    was admitted already (the queries did not run)."""
    from common import auth

    cached = app.context.get("principal")
    if isinstance(cached, auth.Principal):
        return cached, None

    principal = authenticated(app)
    found = auth.admit_along(principal, route_key(app), queries, params, limit=route_limit)
    app.append_context(principal=principal)
    return principal, found


def authenticated(app: LambdaFunctionUrlResolver) -> Principal:
    """The caller named by the request's Bearer JWT (401), verified once per request;
    not yet admitted (rate limit, user row): ``current_user`` does that."""
    from common import auth

    cached = app.context.get("authenticated")
    if isinstance(cached, auth.Principal):
        return cached
    principal = auth.authenticate(app.current_event.headers.get("authorization"))
    app.append_context(authenticated=principal)
    return principal


def idempotent[M: BaseModel](
    app: LambdaFunctionUrlResolver,
    fn: Callable[[], M],
    *,
    model: type[M],
    user: Principal | None = None,
    payload: Any = None,
    required: bool = False,
    expires_after_seconds: int = IDEMPOTENCY_TTL_S,
) -> M:
    """Run ``fn`` once per client ``Idempotency-Key``; a retry gets the stored result.

    The key is scoped to (user, service, method, path), so keys never collide across
    users or routes. ``payload`` (default: the JSON body) is fingerprinted: the same key
    with a different payload is 422 ``idempotency_key_reused``; while the first request
    is still running a retry is 409 ``request_in_progress``. Without the header ``fn``
    just runs, unless ``required`` (then 400). ``fn`` returns a ``model``: its JSON is
    stored, and a retry receives it validated back into the model, with the response
    header ``Idempotent-Replayed: true``. A request that fails (raises) is not remembered, so it
    can be retried.
    """
    key = app.current_event.headers.get("idempotency-key")
    if key is None:
        if required:
            raise AppError("this request needs an Idempotency-Key header", code="idempotency_key_required")
        return fn()
    if not (0 < len(key) <= _MAX_KEY_LENGTH and key.isascii() and key.isprintable() and " " not in key):
        raise AppError(
            f"Idempotency-Key must be 1-{_MAX_KEY_LENGTH} printable ASCII characters without spaces",
            code="invalid_idempotency_key",
        )
    from common import idempotency

    _register_idempotency_errors(app)
    principal = user or current_user(app)
    event = app.current_event
    scope = f"{principal.user_id} {service_name()}:{event.http_method.upper()} {event.path}"
    if payload is None:
        payload = event.json_body
    outcome = idempotency.run_idempotent(scope, key, payload, fn, model=model,
                                         expires_after_seconds=expires_after_seconds,
                                         lambda_context=app.lambda_context, owner=principal.user_id)
    if outcome.replayed:
        app.append_context(idempotent_replayed=True)  # check_request adds the header
    return outcome.result


# --- the error registry ------------------------------------------------------------------


def error_response(status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                   **extra: Any) -> Response[dict[str, Any]]:
    """The one error envelope."""
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"error": {"code": code, "message": message, **extra}},
        headers=headers,
    )


def _register_errors(app: LambdaFunctionUrlResolver) -> None:
    @app.exception_handler(AppError)
    def app_error(exc: AppError) -> Response[dict[str, Any]]:
        headers = {}
        retry_after = exc.retry_after or (UNAVAILABLE_RETRY_AFTER_S if exc.status == 503 else None)
        if retry_after:
            headers["Retry-After"] = str(retry_after)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        log = logger.warning if exc.status >= 500 else logger.info
        log("request refused", extra={"status": exc.status, "code": exc.code})
        return error_response(exc.status, exc.code, exc.message, headers=headers)

    @app.exception_handler(RequestValidationError)
    def invalid_request(exc: RequestValidationError) -> Response[dict[str, Any]]:
        errors = exc.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return error_response(400, "invalid_json", "the request body is not valid JSON")
        # loc and msg only: pydantic's "input" would echo what the client sent.
        fields = [{"loc": list(err.get("loc", ())), "msg": err.get("msg", "invalid")} for err in errors]
        return error_response(422, "invalid_input", "the request is invalid", fields=fields)

    @app.exception_handler(json.JSONDecodeError)
    def invalid_json(exc: json.JSONDecodeError) -> Response[dict[str, Any]]:
        return error_response(400, "invalid_json", "the request body is not valid JSON")

    @app.exception_handler(UnicodeDecodeError)
    def undecodable(exc: UnicodeDecodeError) -> Response[dict[str, Any]]:
        # Powertools decodes a base64 body as UTF-8 before any JSON parsing: bytes that
        # are not UTF-8 are the client's error. Raised by anything else, it is ours.
        if _body_is_utf8(app.current_event):
            return _internal_error(app, exc, "unhandled error")
        return error_response(400, "invalid_json", "the request body is not valid JSON (not UTF-8)")

    @app.exception_handler(RequestUnsupportedContentType)
    def unsupported_media_type(exc: RequestUnsupportedContentType) -> Response[dict[str, Any]]:
        return error_response(415, "unsupported_media_type", "send the body as application/json")

    @app.exception_handler(NotFoundError)
    def not_found(exc: NotFoundError) -> Response[dict[str, Any]]:
        allowed = _allowed_methods(app)
        if allowed:
            return error_response(405, "method_not_allowed", "method not allowed on this path",
                                  headers={"Allow": ", ".join(sorted(allowed))})
        return error_response(404, "not_found", "not found")

    @app.exception_handler(ServiceError)
    def service_error(exc: ServiceError) -> Response[dict[str, Any]]:
        # Powertools' BadRequestError & co., should a route raise one.
        status = int(exc.status_code)
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        return error_response(status, code, str(exc.msg))

    @app.exception_handler(ResponseValidationError)
    def invalid_response(exc: ResponseValidationError) -> Response[dict[str, Any]]:
        return _internal_error(app, exc, "response failed its own model")

    @app.exception_handler(Exception)
    def unexpected(exc: Exception) -> Response[dict[str, Any]]:
        if db.is_outage(exc):
            return unavailable(exc, "database unavailable")
        if is_account_deleted(exc):
            # The account was deleted while this request ran: the database refused its write.
            logger.info("request refused", extra={"status": 401, "code": "account_deleted"})
            return error_response(401, "account_deleted", "this account has been deleted",
                                  headers={"WWW-Authenticate": "Bearer"})
        return _internal_error(app, exc, "unhandled error")


def _register_idempotency_errors(app: LambdaFunctionUrlResolver) -> None:
    """The idempotency utility's errors, added to the registry when a route first uses
    ``idempotent`` (importing the utility costs ~300 ms: it imports boto3)."""
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyInconsistentStateError,
        IdempotencyPersistenceLayerError,
        IdempotencyValidationError,
    )

    if IdempotencyAlreadyInProgressError in app.exception_handler_manager.get_registered_handlers():
        return

    @app.exception_handler(IdempotencyAlreadyInProgressError)
    def in_progress(exc: Exception) -> Response[dict[str, Any]]:
        return error_response(409, "request_in_progress",
                              "a request with this Idempotency-Key is still being processed; retry later",
                              headers={"Retry-After": "1"})

    @app.exception_handler(IdempotencyValidationError)
    def key_reused(exc: Exception) -> Response[dict[str, Any]]:
        return error_response(422, "idempotency_key_reused",
                              "this Idempotency-Key was used with a different request")

    @app.exception_handler([IdempotencyPersistenceLayerError, IdempotencyInconsistentStateError])
    def store_failed(exc: Exception) -> Response[dict[str, Any]]:
        return unavailable(exc, "idempotency store unavailable")


def unavailable(exc: BaseException, what: str) -> Response[dict[str, Any]]:
    """503 for an outage: logged once, as a warning with the error's class and no
    traceback (an outage is not a bug, and its message may name hosts)."""
    cause = exc.__cause__ or exc
    logger.warning(what, extra={"error": type(cause).__name__})
    return error_response(503, "unavailable", "the service is briefly unavailable; retry shortly",
                          headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})


def _internal_error(app: LambdaFunctionUrlResolver, exc: Exception, what: str) -> Response[dict[str, Any]]:
    context = app.lambda_context
    request_id = getattr(context, "aws_request_id", None) or app.current_event.request_context.request_id
    logger.exception(what, exc_info=exc)
    return error_response(500, "internal_error", f"internal error (request id {request_id})")


def _allowed_methods(app: LambdaFunctionUrlResolver) -> set[str]:
    """Methods of the routes matching this path, when none matches this method.

    Powertools answers an unmatched method with its not-found route; its route table
    (private attributes, pinned version) tells 404 from 405.
    """
    path = app.context.get("_path", app.current_event.path)
    method = app.current_event.http_method.upper()
    matching = {r.method for r in app._static_routes + app._dynamic_routes if r.rule.match(path)}
    return set() if method in matching else matching


def _body_is_utf8(event: LambdaFunctionUrlEvent) -> bool:
    import base64
    import binascii

    body = event.body
    if not body or not event.is_base64_encoded:
        return True
    try:
        base64.b64decode(body).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return True


def _check_path_and_query(event: LambdaFunctionUrlEvent) -> None:
    """Refuse a path or query string holding what no text column can store (NUL, an
    unpaired surrogate): a 400 here, rather than a database error later."""
    query = event.query_string_parameters or {}
    if not all(safejson.is_storable(text) for text in (event.path, *query.keys(), *query.values())):
        raise AppError("the path or query string holds NUL or an unpaired surrogate", code="invalid_request")


def _check_body_size(event: LambdaFunctionUrlEvent, limit: int) -> None:
    """Refuse a body over ``limit`` bytes, measured without decoding it."""
    body = event.body
    if not body:
        return
    if event.is_base64_encoded:
        size = len(body) * 3 // 4 - body[-2:].count("=")
    else:
        size = len(body) if body.isascii() else len(body.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise PayloadTooLarge(f"the request body exceeds {limit} bytes")
