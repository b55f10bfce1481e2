"""The peer of scripts/bench/cold_start.py: a client handler written with psycopg and
PyJWT alone. It does what every client route of the functions does first (verify an
HS256 Bearer JWT with required ``exp`` and ``sub``, ``sub`` a UUID) and one query on a
kept connection, and answers JSON: the least a Python Lambda can do for an
authenticated request."""

import json
import os
import uuid

import jwt
import psycopg

_conn = None


def handler(event, context):
    global _conn
    _scheme, _, token = (event.get("headers") or {}).get("authorization", "").partition(" ")
    try:
        claims = jwt.decode(token, os.environ["JWT_SECRET"], algorithms=["HS256"], leeway=30,
                            options={"require": ["exp", "sub"]})
        user_id = uuid.UUID(claims["sub"])
    except (jwt.PyJWTError, ValueError, TypeError):
        return {"statusCode": 401, "headers": {"content-type": "application/json"},
                "body": json.dumps({"error": {"code": "unauthorized", "message": "invalid credentials"}})}
    if _conn is None or _conn.closed:
        _conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    row = _conn.execute("SELECT created_at FROM users WHERE id = %s", (user_id,)).fetchone()
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({"user_id": str(user_id), "known": row is not None})}
