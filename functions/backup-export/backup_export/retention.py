"""Backup retention: which runs under ``backups/<stage>/`` to delete.

- A run is complete when its ``manifest.json`` exists (it is written last).
- The newest ``keep_runs`` complete runs are always kept, however old: if backups stop
  succeeding, the last good ones stay.
- Other complete runs older than ``retention_days`` are deleted.
- Incomplete runs (failed or killed) older than ``FAILED_RUN_GRACE`` are deleted: a
  run still in progress is younger than Lambda's 15-minute limit.
- Prefixes that are not run timestamps are never touched.

The bucket's lifecycle rule is the backstop (docs/housekeeping.md): with versioning on,
a deleted object becomes a noncurrent version that the lifecycle expires a few days later.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from backup_export.export import MANIFEST, RUN_FORMAT

FAILED_RUN_GRACE = timedelta(days=1)
DELETE_BATCH = 1000  # S3 DeleteObjects limit


@dataclass
class Run:
    name: str
    at: datetime
    keys: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return any(key.endswith("/" + MANIFEST) for key in self.keys)


def parse_run(name: str) -> datetime | None:
    try:
        return datetime.strptime(name, RUN_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def list_runs(bucket: str, stage: str) -> list[Run]:
    """Every run under the stage's prefix with its object keys, newest first."""
    from common import storage

    prefix = f"backups/{stage}/"
    runs: dict[str, Run] = {}
    for page in storage.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            name, _, rest = obj["Key"][len(prefix):].partition("/")
            at = parse_run(name)
            if at is None or not rest:
                continue
            runs.setdefault(name, Run(name, at)).keys.append(obj["Key"])
    return sorted(runs.values(), key=lambda r: r.at, reverse=True)


def select_expired(runs: Iterable[Run], *, now: datetime, retention_days: int, keep_runs: int,
                   current: str | None = None) -> list[Run]:
    """The runs to delete (pure: decided from names and manifests only)."""
    cutoff = now - timedelta(days=retention_days)
    kept_complete = 0
    expired = []
    for run in sorted(runs, key=lambda r: r.at, reverse=True):
        if run.complete:
            kept_complete += 1
            if kept_complete <= keep_runs:
                continue
        if run.name == current:  # counted above; never deleted
            continue
        if run.complete:
            if run.at < cutoff:
                expired.append(run)
        elif run.at < now - FAILED_RUN_GRACE:
            expired.append(run)
    return expired


def apply(bucket: str, stage: str, *, now: datetime, retention_days: int, keep_runs: int,
          current: str | None = None) -> dict[str, Any]:
    """Delete the expired runs; ``{"deleted_runs": [...], "kept_runs": n, "objects": n}``."""
    from common import storage

    runs = list_runs(bucket, stage)
    expired = select_expired(runs, now=now, retention_days=retention_days, keep_runs=keep_runs,
                             current=current)
    keys = [key for run in expired for key in run.keys]
    client = storage.s3()
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start:start + DELETE_BATCH]
        response = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch],
                                                                "Quiet": True})
        if response.get("Errors"):
            first = response["Errors"][0]
            raise RuntimeError(f"could not delete {len(response['Errors'])} backup object(s): "
                               f"{first.get('Code')} on {first.get('Key')}")
    return {"deleted_runs": [run.name for run in expired], "kept_runs": len(runs) - len(expired),
            "objects": len(keys)}
