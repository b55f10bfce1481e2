"""A moto S3 server on localhost, reached by boto3 through ``AWS_ENDPOINT_URL``."""

from __future__ import annotations

import contextlib
import os
import socket

BUCKET_VARS = ("UPLOADS_BUCKET", "GENERATIONS_BUCKET", "BACKUPS_BUCKET", "EXPORTS_BUCKET")
LOCAL_BUCKETS = {"UPLOADS_BUCKET": "local-uploads", "GENERATIONS_BUCKET": "local-generations",
                 "BACKUPS_BUCKET": "local-backups", "EXPORTS_BUCKET": "local-exports"}
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int | None = None):
    """Start moto's threaded server; returns (server, endpoint URL)."""
    from moto.server import ThreadedMotoServer

    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def environment(endpoint: str) -> dict[str, str]:
    """The variables that point boto3 and the functions at the local server."""
    return {"AWS_ENDPOINT_URL": endpoint, **FAKE_CREDENTIALS, **LOCAL_BUCKETS}


def create_buckets(endpoint: str, names: list[str] | None = None) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    for name in names or [os.environ.get(v) or LOCAL_BUCKETS[v] for v in BUCKET_VARS]:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)
