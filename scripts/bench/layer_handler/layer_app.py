"""The peer of scripts/bench/process_image.py's cold-import figure: a handler that
imports only the common layer (its HTTP wiring: Powertools resolver, logger, metrics,
tracer, the error registry) and has one route. What any client-facing function pays
before its own code."""

from common import http

app = http.make_resolver()


@app.get("/")
def index() -> dict:
    return {"ok": True}


handler = http.make_handler(app)
