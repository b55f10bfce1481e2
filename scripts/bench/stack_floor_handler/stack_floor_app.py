"""The floor of scripts/bench/cold_start.py: the reference handler (PyJWT, one psycopg
query) wired as the design brief wires every client function, and nothing else: the
Powertools event handler for routing with request/response validation, a pydantic
response model, Powertools Logger and Metrics around the handler. No layer code: what
any function built to the brief pays at a cold start before its own work."""

import os
import uuid

import jwt
import psycopg
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver
from aws_lambda_powertools.event_handler.exceptions import UnauthorizedError
from aws_lambda_powertools.logging import correlation_paths
from pydantic import BaseModel

logger = Logger()
metrics = Metrics()
app = LambdaFunctionUrlResolver(enable_validation=True)
_conn = None


class WhoAmI(BaseModel):
    user_id: uuid.UUID
    known: bool


@app.get("/whoami")
def whoami() -> WhoAmI:
    global _conn
    _scheme, _, token = (app.current_event.headers.get("authorization") or "").partition(" ")
    try:
        claims = jwt.decode(token, os.environ["JWT_SECRET"], algorithms=["HS256"], leeway=30,
                            options={"require": ["exp", "sub"]})
        user_id = uuid.UUID(claims["sub"])
    except (jwt.PyJWTError, ValueError, TypeError):
        raise UnauthorizedError("invalid credentials") from None
    if _conn is None or _conn.closed:
        _conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    row = _conn.execute("SELECT created_at FROM users WHERE id = %s", (user_id,)).fetchone()
    return WhoAmI(user_id=user_id, known=row is not None)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL)
@metrics.log_metrics
def handler(event, context):
    return app.resolve(event, context)
