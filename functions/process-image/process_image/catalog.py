"""The tools catalog (table ``tools``, seeded by migration 0007): lookups, parameter
validation against each tool's JSON Schema, and canonical parameters.

Parameters are validated with fastjsonschema (draft-07), which also fills in the
schema's defaults: the validated dict is the tool's canonical parameters, so ``{}`` and
``{"radius": 2}`` (the default) are the same request and hit the same cache entry.
Compiled validators are kept per (tool, version).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import db
from common.errors import InvalidInput

# --- Queries ---------------------------------------------------------------------------

_COLUMNS = """id, name, kind, credit_cost, params_schema, prompt_template, prompt_version, model,
              enabled, description, output_format, ai_options, offline_credit_cost"""

LIST_TOOLS = f"SELECT {_COLUMNS} FROM tools ORDER BY sort_order, id"

GET_TOOL = f"SELECT {_COLUMNS} FROM tools WHERE id = %(id)s"

GET_TOOLS = f"SELECT {_COLUMNS} FROM tools WHERE id = ANY(%(ids)s) ORDER BY id"

#: The catalog's version: a trigger writes a new one with any change to tools (a price, a
#: prompt, enabled; migration 0016), so reading it is one row, not a digest of them all.
VERSION = "SELECT version::text FROM tools_catalog_version"

LOAD_CATALOG = f"SELECT {_COLUMNS}, ({VERSION}) AS catalog_version FROM tools ORDER BY sort_order, id"


@dataclass(frozen=True)
class Tool:
    id: str
    name: str
    kind: str  # local | ai (image edits) | analysis (JSON answers)
    credit_cost: int
    params_schema: dict[str, Any]
    prompt_template: str | None
    prompt_version: int  # the tool's version: its prompt template's and parameter schema's
    model: str | None  # None: the AI_IMAGE_MODEL (ai) or AI_VISION_MODEL (analysis) setting
    enabled: bool
    description: str = ""
    output_format: str | None = None  # jpeg | png | webp; None = the source's format
    ai_options: dict[str, Any] = field(default_factory=dict)
    offline_credit_cost: int | None = None  # analysis tools answered offline; None = credit_cost

    @property
    def is_ai(self) -> bool:
        """An AI image edit (OpenAI only)."""
        return self.kind == "ai"

    @property
    def is_analysis(self) -> bool:
        """An analysis answering JSON (OpenAI vision, or offline)."""
        return self.kind == "analysis"


@dataclass(frozen=True)
class Catalog:
    """The tools as read at ``version`` (``VERSION``)."""

    version: str | None
    tools: dict[str, Tool]

    def enabled_tool(self, tool_id: str) -> Tool | None:
        tool = self.tools.get(tool_id)
        return tool if tool is not None and tool.enabled else None


_snapshot: Catalog | None = None


def snapshot() -> Catalog:
    """This container's copy of the catalog, read on first use and kept: the cache-hit
    path then reads no tool row. Whoever uses it checks its ``version`` against
    ``VERSION`` in a statement it runs anyway (process-image's cache lookup) and calls
    ``refresh()`` when they differ, so a catalog change takes effect on the next request."""
    return _snapshot if _snapshot is not None else refresh()


def refresh() -> Catalog:
    """Read the catalog again (one statement: the rows and their version agree)."""
    global _snapshot
    rows = db.execute(LOAD_CATALOG, idempotent=True).fetchall()
    version = rows[0]["catalog_version"] if rows else None
    _snapshot = Catalog(version, {row["id"]: Tool(**{k: v for k, v in row.items() if k != "catalog_version"})
                                  for row in rows})
    return _snapshot


def known_tool(tool_id: str) -> tuple[Tool, Catalog]:
    """``enabled_tool`` from the snapshot, with the snapshot it came from. A tool the
    snapshot lacks or has disabled is looked up again (``refresh``) before the request
    is refused: it may have been added or enabled since."""
    catalog = snapshot()
    tool = catalog.enabled_tool(tool_id)
    if tool is None:
        catalog = refresh()
        tool = catalog.enabled_tool(tool_id)
    if tool is None:
        raise InvalidInput("no such tool, or it is disabled", code="unknown_tool")
    return tool, catalog


def list_tools() -> list[Tool]:
    return [Tool(**row) for row in db.execute(LIST_TOOLS, idempotent=True).fetchall()]


def enabled_tool(tool_id: str) -> Tool:
    """The tool, if it exists and is enabled; otherwise InvalidInput (422, ``unknown_tool``)."""
    row = db.execute(GET_TOOL, {"id": tool_id}, idempotent=True).fetchone()
    if row is None or not row["enabled"]:
        raise InvalidInput("no such tool, or it is disabled", code="unknown_tool")
    return Tool(**row)


def tools_by_id(ids: list[str]) -> list[Tool]:
    """The tools with these ids that exist, enabled or not."""
    return [Tool(**row) for row in db.execute(GET_TOOLS, {"ids": ids}, idempotent=True).fetchall()]


# --- Parameters --------------------------------------------------------------------------

_validators: dict[tuple[str, int], Callable[[Any], Any]] = {}
#: The types of a parameter value that holds nothing mutable (JSON's scalars).
SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
_validators_lock = threading.Lock()


def canonical_params(tool: Tool, params: dict[str, Any] | None) -> dict[str, Any]:
    """``params`` validated against the tool's schema, defaults filled in (a new dict).

    InvalidInput (422, ``invalid_params``) names the failing parameter and rule, never
    the value sent.
    """
    from fastjsonschema import JsonSchemaException

    # The validator fills defaults in place: a copy, shallow when no value is a container.
    if params is None:
        data: dict[str, Any] = {}
    elif SCALAR_TYPES.issuperset(map(type, params.values())):
        data = dict(params)
    else:
        import copy

        data = copy.deepcopy(params)
    try:
        result = _validator(tool)(data)
    except JsonSchemaException as exc:
        # fastjsonschema's messages name the path ("data.width") and the rule, e.g.
        # "must be bigger than or equal to 1" or "must be one of [...]" (the schema's own
        # values), not the input.
        message = str(getattr(exc, "message", "invalid parameters")).replace("data", "params", 1)
        if "must not contain" in message:  # would quote the unknown names the client sent
            message = "params has properties this tool does not take"
        elif "by any definition" in message:  # anyOf: e.g. resize needs width or height
            message = "params is missing a required combination of properties"
        raise InvalidInput(message, code="invalid_params") from None
    return result if isinstance(result, dict) else data


def _validator(tool: Tool) -> Callable[[Any], Any]:
    key = (tool.id, tool.prompt_version)
    validator = _validators.get(key)
    if validator is None:
        import fastjsonschema

        with _validators_lock:
            validator = _validators.get(key)
            if validator is None:
                validator = fastjsonschema.compile(tool.params_schema, use_default=True)
                _validators[key] = validator
    return validator
