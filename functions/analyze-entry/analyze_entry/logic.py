"""What the routes do, without HTTP: store an entry, (re)analyse it, read it.

Order of a create: the pair is checked, then the entitlement, then the entry is analysed
(cache, provider, fallback), and only then is it stored, analysis included, in one
INSERT: a request that fails stores nothing, so a client can simply retry it.

Analyses are cached under (user, SHA-256 of title and content, model, prompt version,
schema version): an unchanged entry is never sent to the provider twice, and a new model
or prompt gets fresh analyses. The user is part of the key so that one user's request
can never be answered from another's entry (nor reveal, by its speed, that someone wrote
the same text). Offline analyses are not cached: recomputing one (about a millisecond)
is cheaper than the cache's write, and nothing is billed.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

from analyze_entry import entries
from analyze_entry.schema import SCHEMA_VERSION, Analysis, AttachmentIn, AttachmentUpload, Entry, EntryIn
from common import cache
from common.errors import InvalidInput, NotFound, PaymentRequired
from common.observability import logger, metrics

if TYPE_CHECKING:
    from analyze_entry.attachments import Inputs
    from analyze_entry.settings import AnalyzeSettings


class EntitlementRequired(PaymentRequired):
    code = "entitlement_required"


# --- routes ----------------------------------------------------------------------------


def create_entry(user_id: UUID, body: EntryIn) -> Entry:
    pair_id = _pair_for(user_id, body)
    analysis = None
    if body.analyze:
        require_entitlement(user_id)
        analysis = analyse(user_id, body.title, body.content)
    row = entries.insert(user_id, pair_id=pair_id, title=body.title, content=body.content,
                         visibility=body.visibility,
                         analysis=analysis.model_dump(mode="json") if analysis else None)
    logger.info("entry stored", extra={"entry_id": str(row["id"]), "visibility": body.visibility,
                                       "analysed": analysis is not None})
    return Entry.model_validate(row)


def reanalyse_entry(user_id: UUID, entry_id: str) -> Entry:
    """Analyse one of the user's own entries again, with its voice and photo notes (from
    the cache when unchanged)."""
    from analyze_entry import attachments
    from analyze_entry.settings import settings

    entry = _id(entry_id)
    row = entries.own(user_id, entry)
    if row is None:
        raise NotFound("no such entry")
    require_entitlement(user_id)
    s = settings()
    api_key = _openai_key(s)
    inputs = attachments.analysis_inputs(user_id, entry, s, api_key)
    analysis = analyse(user_id, row["title"], row["content"], inputs=inputs, api_key=api_key)
    row = entries.set_analysis(user_id, entry, analysis.model_dump(mode="json"))
    if row is None:  # deleted meanwhile
        raise NotFound("no such entry")
    return _with_attachments(user_id, row, none=inputs.attachments == 0)


def get_entry(user_id: UUID, entry_id: str) -> Entry:
    """The entry if the database says the user may read it; otherwise 404, whether it
    exists or not."""
    row = entries.visible(user_id, _id(entry_id))
    if row is None:
        raise NotFound("no such entry")
    return _with_attachments(user_id, row)


def delete_entry(user_id: UUID, entry_id: str) -> None:
    """The author deletes an entry; its attachments (rows and objects) go with it."""
    from analyze_entry import attachments
    from analyze_entry.settings import settings

    attachments.delete_entry(user_id, _id(entry_id), settings())


def add_attachment(user_id: UUID, entry_id: str, body: AttachmentIn) -> AttachmentUpload:
    from analyze_entry import attachments
    from analyze_entry.settings import settings

    return attachments.create_form(user_id, _id(entry_id), body.content_type, body.size, settings())


def delete_attachment(user_id: UUID, entry_id: str, attachment_id: str) -> None:
    from analyze_entry import attachments
    from analyze_entry.settings import settings

    try:
        attachment = UUID(attachment_id)
    except ValueError:
        raise NotFound("no such attachment") from None
    attachments.delete(user_id, _id(entry_id), attachment, settings())


def _with_attachments(viewer: UUID, row: dict[str, Any], *, none: bool = False) -> Entry:
    """The entry with its attachments (``none``: known to have none, no query)."""
    from analyze_entry import attachments
    from analyze_entry.settings import settings

    entry = Entry.model_validate(row)
    if not none:
        entry.attachments = attachments.views(viewer, entry.id, settings())
    return entry


# --- rules -----------------------------------------------------------------------------


def _pair_for(user_id: UUID, body: EntryIn) -> UUID | None:
    """The pair an entry is filed under: the one given (which must be the author's), or
    the author's own for a shared entry; a private entry without one has none."""
    if body.pair_id is None and body.visibility == "private":
        return None
    mine = entries.pair_of(user_id)
    if body.pair_id is not None and body.pair_id != mine:
        raise entries.NotPairMember("you are not a member of this pair")
    if mine is None:
        raise InvalidInput("a shared entry needs a pair, and you are not in one", code="no_pair")
    return mine


def require_entitlement(user_id: UUID) -> None:
    """Analysis needs ANALYZE_ENTITLEMENT (the user's or their pair's), when it is set."""
    from analyze_entry.settings import settings

    needed = settings().ANALYZE_ENTITLEMENT
    if needed is None:
        return
    from common.entitlements import has_entitlement

    if not has_entitlement(user_id, needed):
        raise EntitlementRequired(f"entry analysis needs an active '{needed}' subscription")


def _id(entry_id: str) -> UUID:
    try:
        return UUID(entry_id)
    except ValueError:
        raise NotFound("no such entry") from None


# --- analysis --------------------------------------------------------------------------


def text_digest(title: str | None, content: str, extras: dict[str, Any] | None = None) -> str:
    """SHA-256 of the analysed text (title and content, and the transcripts and photo
    descriptions when there are any, as canonical JSON)."""
    parts: list[Any] = [title, content]
    if extras:
        parts.append(extras)
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


_UNSET: Any = object()


def analyse(user_id: UUID, title: str | None, content: str, *, inputs: Inputs | None = None,
            api_key: str | None = _UNSET) -> Analysis:
    """The entry's analysis: OpenAI (through the cache) when configured, offline
    otherwise, or offline when OpenAI fails and ANALYZE_FALLBACK_OFFLINE is on.
    ``inputs``: what the entry's attachments add (transcripts, photo descriptions, notes)."""
    from analyze_entry import offline_analyser, openai_analyser
    from analyze_entry.settings import settings

    s = settings()
    started = time.perf_counter()
    if api_key is _UNSET:
        api_key = _openai_key(s)
    extras: dict[str, Any] = {}
    notes: list[str] = []
    if inputs is not None:
        extras = {name: value for name, value in (("voice_notes", inputs.voice_notes),
                                                  ("photos", inputs.photos)) if value}
        notes = list(inputs.notes)
    if api_key:
        try:
            analysis, computed = _cached_openai(user_id, title, content, api_key, s, extras, notes)
            _done(analysis, started, computed=computed)
            return analysis
        except (openai_analyser.ProviderFailed, openai_analyser.ProviderTimeout) as exc:
            if not s.ANALYZE_FALLBACK_OFFLINE:
                raise
            _count("AnalysisFallback")
            logger.warning("analysis provider failed; answering offline", extra={"code": exc.code})
    if extras.get("photos"):  # the offline analyser reads text only
        notes.append(f"{len(extras['photos'])} photo(s) left out: the offline analyser reads text only.")
    transcripts = [note["transcript"] for note in extras.get("voice_notes", [])]
    analysis = offline_analyser.analyse(title, content, transcripts=transcripts, notes=notes)
    _done(analysis, started, computed=True)
    return analysis


def _openai_key(s: AnalyzeSettings) -> str | None:
    """The key when OpenAI is to be used. In "auto" mode a key that is configured but
    cannot be resolved (a missing SSM parameter, say) is a provider failure: offline
    when fallback is on, an error otherwise."""
    if s.ANALYZE_PROVIDER == "offline":
        return None
    from common import config

    if s.ANALYZE_PROVIDER == "openai":
        return config.require_secret("OPENAI_API_KEY")
    try:
        return config.secret("OPENAI_API_KEY")
    except Exception as exc:
        if not s.ANALYZE_FALLBACK_OFFLINE:
            raise
        _count("AnalysisFallback")
        logger.warning("OPENAI_API_KEY could not be resolved; answering offline",
                       extra={"error_type": type(exc).__name__})
        return None


def _cached_openai(user_id: UUID, title: str | None, content: str, api_key: str,
                   s: AnalyzeSettings, extras: dict[str, Any], notes: list[str]) -> tuple[Analysis, bool]:
    from analyze_entry import openai_analyser

    computed = False

    def compute() -> dict[str, Any]:
        nonlocal computed
        computed = True
        result = openai_analyser.analyse(
            title, content, api_key=api_key, model=s.ANALYZE_OPENAI_MODEL,
            timeout_s=s.ANALYZE_OPENAI_TIMEOUT_S, max_retries=s.ANALYZE_OPENAI_MAX_RETRIES,
            attempts=s.ANALYZE_OPENAI_ATTEMPTS, extras=extras, notes=notes)
        return result.model_dump(mode="json")

    digest = text_digest(title, content, {**extras, "notes": notes} if extras or notes else None)
    key = cache_key(user_id, digest, s.ANALYZE_OPENAI_MODEL, openai_analyser.PROMPT_VERSION)
    value = cache.get_or_compute(key, s.ANALYZE_CACHE_TTL_S, compute)
    return Analysis.model_validate(value), computed


def cache_key(user_id: UUID, digest: str, model: str, prompt_version: str) -> str:
    return cache.key("analysis", user_id, digest, model=model, prompt_version=prompt_version,
                     schema_version=SCHEMA_VERSION)


def _done(analysis: Analysis, started: float, *, computed: bool) -> None:
    if computed:
        _count("AnalysisOpenAI" if analysis.source == "openai" else "AnalysisOffline")
    # Provenance and timing only: the analysis itself (mood included) is the user's.
    logger.info("entry analysed", extra={"source": analysis.source, "model": analysis.model,
                                         "cached": not computed,
                                         "ms": round((time.perf_counter() - started) * 1000, 1)})


def _count(name: str) -> None:
    from aws_lambda_powertools.metrics import MetricUnit

    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
