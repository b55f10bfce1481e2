"""backup-export: a consistent, checksummed snapshot of the database in S3, with retention."""
