"""JSON from outside the system, parsed within limits that keep bad input a 4xx.

The standard library's parser is fast and exact but has no limits of its own: a body
nested 100,000 levels deep raises ``RecursionError``, an integer literal of 5,000 digits
``ValueError``, and strings may hold what Postgres cannot store (NUL, unpaired
surrogates). ``loads`` adds the limits and raises ``InvalidJson`` (400 ``invalid_json``):

- nesting: at most ``MAX_DEPTH`` levels of arrays and objects;
- numbers: literals of at most ``MAX_NUMBER_CHARS`` characters, finite (no ``NaN``,
  ``Infinity``, nor a float that overflows to infinity);
- strings (keys and values), by the caller's choice: ``reject`` NUL and unpaired
  surrogates (client bodies: a clear 400), ``replace`` them with U+FFFD (a signed
  provider event that must still be stored and applied), or ``keep`` them (a body whose
  exact values are still to be verified; call ``clean`` afterwards).

No library offers these checks around the standard parser (orjson and pydantic's parser
have fixed depth limits and no string rules), so they are written here; the walk that
enforces them runs only when the text could break one (more than ``MAX_DEPTH`` brackets,
or a ``\\u`` escape), so an ordinary body costs two ``str.count`` calls and one search.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from common.errors import AppError

#: Levels of nested arrays/objects a body may have (provider events use fewer than 10).
MAX_DEPTH = 64
#: Characters of one number literal (an amount in minor units has fewer than 20).
MAX_NUMBER_CHARS = 64

StringRule = Literal["reject", "replace", "keep"]

#: Characters Postgres text and jsonb cannot hold. Python keeps a valid surrogate pair
#: from a JSON escape as one character, so any surrogate left in a str is unpaired.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_REPLACEMENT = "\ufffd"


class InvalidJson(AppError):
    status = 400
    code = "invalid_json"


def loads(data: str | bytes, *, strings: StringRule = "reject") -> Any:
    """Parse ``data`` (text, or UTF-8 bytes) within the limits above."""
    if isinstance(data, bytes | bytearray):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJson("the body is not valid JSON (not UTF-8)") from None
    try:
        value = json.loads(data, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise _too_deep() from None
    except ValueError:  # JSONDecodeError, and anything else the parser refuses
        raise InvalidJson("the body is not valid JSON") from None
    deep = data.count("[") + data.count("{") > MAX_DEPTH
    odd = strings != "keep" and ("\\u" in data or _UNSTORABLE.search(data) is not None)
    if deep or odd:
        value = _walk(value, 0, strings)
    return value


def clean(value: Any) -> Any:
    """``value`` with unstorable characters in every string replaced by U+FFFD (for a
    structure parsed with ``strings="keep"`` whose signature has been checked)."""
    return _walk(value, 0, "replace")


def clean_text(text: str) -> str:
    return _UNSTORABLE.sub(_REPLACEMENT, text)


def is_storable(text: str) -> bool:
    """False when ``text`` holds NUL or an unpaired surrogate."""
    return _UNSTORABLE.search(text) is None


def _walk(node: Any, depth: int, strings: StringRule) -> Any:
    # Recursion is bounded: a level past MAX_DEPTH raises before going further.
    if isinstance(node, str):
        if strings == "keep" or _UNSTORABLE.search(node) is None:
            return node
        if strings == "replace":
            return _UNSTORABLE.sub(_REPLACEMENT, node)
        raise InvalidJson("strings must not contain NUL characters or unpaired surrogates")
    if isinstance(node, list | dict):
        if depth >= MAX_DEPTH:
            raise _too_deep()
        if isinstance(node, list):
            return [_walk(item, depth + 1, strings) for item in node]
        return {_walk(k, depth, strings): _walk(v, depth + 1, strings) for k, v in node.items()}
    return node


def _too_deep() -> InvalidJson:
    return InvalidJson(f"the body is nested more than {MAX_DEPTH} levels deep")


def _int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise InvalidJson(f"a number in the body is longer than {MAX_NUMBER_CHARS} characters")
    return int(literal)


def _float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise InvalidJson(f"a number in the body is longer than {MAX_NUMBER_CHARS} characters")
    value = float(literal)
    if not math.isfinite(value):
        raise InvalidJson("a number in the body is out of range")
    return value


def _constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not valid JSON")
