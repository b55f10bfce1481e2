"""The sample events under events/: which ones there are, and the bearer tokens of the
client-facing ones.

A client sample carries a real token for the demo user (or the partner), signed with
the local JWT secret (``devkit.runner.settings.LOCAL_JWT_SECRET``, also in env.local.example.json)
and valid for years, so the file works as it is with ``scripts/invoke`` and with
``sam local invoke -e ... --env-vars env.local.json``. ``python -m devkit.samples``
re-mints them (after the secret changed, or before they expire).
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from devkit import ROOT

EVENTS = ROOT / "events"
#: Client functions: their samples carry a bearer token.
CLIENT_FUNCTIONS = ("account", "process-image", "analyze-entry", "checkout")
#: Sample tokens expire on this date (re-mint before then).
TOKEN_EXPIRES = datetime(2036, 1, 1, tzinfo=UTC)


def all_samples(events: Path = EVENTS) -> Iterator[tuple[str, Path]]:
    """(function, file) of every sample, by function then file name."""
    for folder in sorted(p for p in events.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.json"), key=lambda p: p.stem):
            yield folder.name, path


def token_subject(event: dict[str, Any]) -> str | None:
    """The ``sub`` of the event's bearer token (not verified), or None."""
    header = next((v for k, v in (event.get("headers") or {}).items() if k.lower() == "authorization"), "")
    scheme, _, token = str(header).partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("sub")
    except ValueError:
        return None


def mint(user_id: UUID | str, secret: str) -> str:
    from devkit import seed

    ttl = TOKEN_EXPIRES - datetime.now(UTC)
    return seed.token(user_id, secret, ttl=ttl)


def refresh_tokens(secret: str, events: Path = EVENTS) -> list[Path]:
    """Re-mint the bearer token of every client sample for its user (the demo user when
    the token names none); return the files rewritten."""
    from devkit import seed

    written = []
    for function, path in all_samples(events):
        if function not in CLIENT_FUNCTIONS:
            continue
        event = json.loads(path.read_text())
        if "requestContext" not in event:  # a scheduled job's event (account's export-job)
            continue
        user = token_subject(event) or str(seed.DEMO_USER_ID)
        event["headers"]["authorization"] = f"Bearer {mint(user, secret)}"
        path.write_text(json.dumps(event, indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def main() -> int:
    from devkit.runner.settings import LOCAL_JWT_SECRET

    secret = sys.argv[1] if len(sys.argv) > 1 else LOCAL_JWT_SECRET
    for path in refresh_tokens(secret):
        print(f"re-minted {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
