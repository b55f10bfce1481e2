#!/usr/bin/env python3
"""Run the project locally (what `make dev` runs): every function of template.yaml served
at http://127.0.0.1:3000/<function>/ as Lambda function URLs, scheduled functions on their
schedules, Postgres (DATABASE_URL, else the embedded server) migrated and seeded, moto S3
with the buckets (objects kept in .local/s3), AI from the offline providers unless
OPENAI_API_KEY is set, local Paymob and Stripe with checkout pages.

Usage: scripts/dev.py [--port 3000] [--template template.yaml] [--env-file env.local.json]
                      [--no-schedules] [--no-services] [--s3-port PORT] [--s3-state DIR]
       scripts/dev.py --stop-postgres
Through make: PORT=4000 S3_PORT=4100 make dev (or make dev PORT=4000).
See docs/local-dev.md.
"""

import argparse
import sys
from pathlib import Path

from devkit import cfn, runner
from devkit.runner import services, settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=settings.DEFAULT_PORT, help="HTTP port (default 3000)")
    parser.add_argument("--template", type=Path, default=cfn.TEMPLATE, help="SAM template to serve")
    parser.add_argument("--env-file", default=str(settings.DEFAULT_ENV_FILE),
                        help="overrides in sam local --env-vars format (default env.local.json; "
                             "'none' for none)")
    parser.add_argument("--s3-port", type=int,
                        help="moto's port, an error when in use (default: --port + 1 when free, "
                             "else a free one)")
    parser.add_argument("--s3-state", default=str(settings.DEFAULT_S3_STATE),
                        help="where S3's objects are kept between runs (default .local/s3; "
                             "'none': in memory)")
    parser.add_argument("--no-schedules", action="store_true", help="run schedules only on demand")
    parser.add_argument("--no-services", action="store_true",
                        help="serve the functions only: no Postgres, migrations, seed or moto")
    parser.add_argument("--stop-postgres", action="store_true", help="stop the embedded Postgres and exit")
    args = parser.parse_args()
    if args.stop_postgres:
        print(services.stop_embedded_postgres())
        return 0
    env_file = None if args.env_file.lower() == "none" else Path(args.env_file)
    s3_state = None if args.s3_state.lower() == "none" else Path(args.s3_state)
    try:
        return runner.main(args.template, args.port, env_file, services=not args.no_services,
                           run_schedules=not args.no_schedules, s3_port=args.s3_port, s3_state=s3_state)
    except cfn.TemplateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
