"""backup-export handler: EventBridge Scheduler (daily) or a person invokes it with
``{"retention": bool}`` (optional, default true: delete expired runs after a success).

Returns a summary of the run (its prefix, tables, rows, bytes, the retention outcome);
the manifest in S3 is the full record. Emits ``LastSuccessfulBackup`` (the template's
alarm fires when it is missing for more than a day), ``BackupBytes``, ``BackupRows``,
``BackupSeconds`` and ``BackupRunsDeleted``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from pydantic import BaseModel, ConfigDict

from backup_export import export, retention
from backup_export.settings import BackupSettings
from common import db
from common.errors import ConfigError
from common.observability import logger


class BackupInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention: bool = True


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    request = BackupInput.model_validate(event or {})
    settings = BackupSettings()
    if not settings.BACKUPS_BUCKET:
        raise ConfigError("BACKUPS_BUCKET is not set")
    options = export.Options(bucket=settings.BACKUPS_BUCKET, stage=settings.STAGE, exclude=settings.exclude,
                             redact=export.parse_redactions(settings.BACKUP_REDACT_COLUMNS),
                             compression=settings.BACKUP_COMPRESSION, level=settings.compression_level,
                             copy_format=settings.BACKUP_COPY_FORMAT,
                             parallel_tables=settings.BACKUP_PARALLEL_TABLES)
    started = time.monotonic()
    try:
        with db.transaction() as conn:
            # db.connection is one connection per thread: each further worker gets its own
            # (the export closes it when its thread is done).
            manifest = export.export(conn, options, min_time_s=settings.BACKUP_MIN_TIME_LEFT_S,
                                     time_left=lambda: context.get_remaining_time_in_millis() / 1000,
                                     connect=db.connection)
    except export.BackupBusy:
        logger.warning("another backup run is in progress; this one did nothing")
        return {"status": "skipped", "reason": "another backup run is in progress"}
    seconds = time.monotonic() - started
    summary: dict[str, Any] = {
        "status": "complete",
        "run": manifest["run"],
        "prefix": export.run_prefix(options.stage, manifest["run"]),
        "tables": len(manifest["tables"]),
        "rows": sum(t["rows"] for t in manifest["tables"]),
        "bytes": sum(t["bytes"] for t in manifest["tables"]),
        "data_bytes": sum(t["data_bytes"] for t in manifest["tables"]),
        "migration_version": manifest["migration_version"],
        "redacted": manifest["redacted"],
        "seconds": round(seconds, 3),
    }
    metrics = EphemeralMetrics()
    metrics.add_metric(name="LastSuccessfulBackup", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="BackupBytes", unit=MetricUnit.Bytes, value=summary["bytes"])
    metrics.add_metric(name="BackupRows", unit=MetricUnit.Count, value=summary["rows"])
    metrics.add_metric(name="BackupSeconds", unit=MetricUnit.Seconds, value=seconds)
    metrics.flush_metrics()  # the backup stands even if retention fails below
    if request.retention:
        summary["retention"] = retention.apply(
            options.bucket, options.stage, now=datetime.now(UTC),
            retention_days=settings.BACKUP_RETENTION_DAYS, keep_runs=settings.BACKUP_KEEP_RUNS,
            current=manifest["run"])
        metrics.add_metric(name="BackupRunsDeleted", unit=MetricUnit.Count,
                           value=len(summary["retention"]["deleted_runs"]))
        metrics.flush_metrics()
    logger.info("backup finished", extra={"backup": summary})
    return summary
