"""Invite codes a person can type: 12 symbols of Crockford's base32 (60 random bits),
shown as ``XXXX-XXXX-XXXX``.

Crockford's alphabet has no I, L, O or U, and reading a code back forgives what people
mistype: case, spaces and hyphens are ignored, I and L read as 1, O as 0. 60 bits: with
a million invites open at once, a guess hits one with a chance of 1 in 2^40, and guesses
are limited per user (JOIN_ATTEMPTS_PER_HOUR). Only a code's SHA-256 is stored.

Hand-written: the few lines of a base32 variant with these reading rules are smaller than
any dependency, and ``secrets`` is the well-kept source of randomness.
"""

from __future__ import annotations

import hashlib
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH = 12
GROUP = 4
#: What people type for what they see.
_READS_AS = str.maketrans({"I": "1", "L": "1", "O": "0"})
_IGNORED = str.maketrans("", "", " -\t")
#: Longest text accepted as a code (separators included) before it is even read.
MAX_INPUT = 32


def new_code() -> str:
    """A fresh code, canonical (``display`` shows it as ``XXXX-XXXX-XXXX``)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def display(canonical: str) -> str:
    return "-".join(canonical[i:i + GROUP] for i in range(0, LENGTH, GROUP))


def canonical(text: str) -> str | None:
    """The code as stored (12 symbols, upper case), or None when ``text`` is no code."""
    if not isinstance(text, str) or len(text) > MAX_INPUT:
        return None
    code = text.upper().translate(_IGNORED).translate(_READS_AS)
    if len(code) != LENGTH or any(ch not in ALPHABET for ch in code):
        return None
    return code


def digest(canonical_code: str) -> bytes:
    """What the database stores and looks up: SHA-256 of the canonical code."""
    return hashlib.sha256(canonical_code.encode("ascii")).digest()
