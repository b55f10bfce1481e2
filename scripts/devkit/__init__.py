"""Local stand-ins for the cloud, shared by the scripts and the tests: Postgres (the
configured one or an embedded one), migrations, a moto S3 server, fake provider APIs
and Lambda-style invocation of the functions declared in template.yaml."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
