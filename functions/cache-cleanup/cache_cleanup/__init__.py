"""cache-cleanup: bounded purges of expired rows and refunds of stale credit reservations."""
