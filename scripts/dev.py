#!/usr/bin/env python3
"""Run the project locally (what `make dev` runs): every function of template.yaml served
at http://127.0.0.1:3000/<function>/ as Lambda function URLs, scheduled functions on their
schedules, Postgres (DATABASE_URL, else the embedded server) migrated and seeded, moto S3
with the buckets, AI from the offline providers unless OPENAI_API_KEY is set.

Usage: scripts/dev.py [--port 3000] [--template template.yaml] [--env-file env.local.json]
                      [--no-schedules] [--no-services] [--s3-port PORT]
       scripts/dev.py --stop-postgres
See docs/local-dev.md.
"""

import argparse
import sys
from pathlib import Path

from devkit import cfn, runner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=runner.DEFAULT_PORT, help="HTTP port (default 3000)")
    parser.add_argument("--template", type=Path, default=runner.TEMPLATE, help="SAM template to serve")
    parser.add_argument("--env-file", default=str(runner.DEFAULT_ENV_FILE),
                        help="overrides in sam local --env-vars format (default env.local.json; "
                             "'none' for none)")
    parser.add_argument("--s3-port", type=int, help="moto's port (default: --port + 1, else a free one)")
    parser.add_argument("--no-schedules", action="store_true", help="run schedules only on demand")
    parser.add_argument("--no-services", action="store_true",
                        help="serve the functions only: no Postgres, migrations, seed or moto")
    parser.add_argument("--stop-postgres", action="store_true", help="stop the embedded Postgres and exit")
    args = parser.parse_args()
    if args.stop_postgres:
        print(runner.stop_embedded_postgres())
        return 0
    env_file = None if args.env_file.lower() == "none" else Path(args.env_file)
    try:
        return runner.main(args.template, args.port, env_file, services=not args.no_services,
                           run_schedules=not args.no_schedules, s3_port=args.s3_port)
    except cfn.TemplateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
