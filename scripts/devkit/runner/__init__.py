"""The local runner behind ``make dev``: every function of template.yaml served as Lambda
would serve it, without Docker.

- Function URLs: ``http://127.0.0.1:3000/<function>/<path>`` becomes a Function URL event
  (payload 2.0) whose rawPath is ``/<path>``; the handler's response is turned back into
  HTTP as the URL service does it (``function_url``, ``cors``).
- Each function runs in worker processes of its own (``pool``, ``devkit.worker``): its
  CodeUri and layers on sys.path, warm between requests, restarted cold when a file under
  the CodeUri or a layer changes, killed when it overruns the function's Timeout.
- Scheduled functions (ScheduleV2 / Schedule events) fire on their rate/cron/at
  expressions with their Input, and on demand: ``POST /_schedules/<function>`` (``scheduler``).
- ``POST /_invoke/<function>`` invokes any function with the request body as its event
  (what ``scripts/invoke`` uses).

One module each: ``settings`` (ports, local secrets, fake-provider settings), ``pool``,
``function_url``, ``cors``, ``scheduler``, ``server`` (the HTTP server), ``app`` (the
``Runner``: a template's functions, their environment, request dispatch), ``services``
(Postgres, migrations and demo data, moto S3, the provider fakes), ``banner`` (what runs
where, tokens, one example per route) and ``serve`` (``main``: all of it until Ctrl-C).
"""

from devkit.runner.app import Runner
from devkit.runner.serve import main

__all__ = ["Runner", "main"]
