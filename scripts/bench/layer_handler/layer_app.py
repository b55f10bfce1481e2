"""The peer of scripts/bench/process_image.py: a handler that imports only the common
layer (its HTTP wiring: Powertools resolver, logger, metrics, tracer, the error
registry) and has two routes, one that does nothing and one that authenticates the
caller. What any client-facing function pays before its own code, cold and warm."""

from common import http

app = http.make_resolver()


@app.get("/")
def index() -> dict:
    return {"ok": True}


@app.get("/whoami")
def whoami() -> dict:
    user = http.current_user(app)  # JWT, rate-limit upsert, user upsert: every client route's floor
    return {"user_id": str(user.user_id)}


handler = http.make_handler(app)
