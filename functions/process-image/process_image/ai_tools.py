"""The AI tools: OpenAI image edits through the official SDK (``client.images.edit``).

- The prompt is the tool's versioned template (``tools.prompt_template``) with its
  ``${name}`` placeholders filled from the validated parameters, and only from
  parameters whose schema is an enum of strings: no text a user typed ever reaches a
  prompt. A template naming anything else is a catalog bug and refused.
- What is sent: the decoded, upright source, at most ``MAX_INPUT_SIDE`` pixels on its
  long side, re-encoded without metadata (no GPS position leaves for the provider).
- Timeout per attempt ``AI_TIMEOUT_S`` (shortened so every attempt ends before the
  Lambda deadline), ``AI_MAX_RETRIES`` retries by the SDK (timeouts, connection errors,
  429, 5xx, with its backoff). Failures map to 504 (timeout), 502 (provider error) or
  422 (the provider refused the image's content).
- The result is decoded with the same pixel limits as any upload and re-encoded without
  metadata.

``openai`` is imported here, on the AI path only: it costs a cold start ~0.5 s.
"""

from __future__ import annotations

import base64
import hashlib
import string
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from common import config
from common.errors import BadGateway, ConfigError, GatewayTimeout, InvalidInput, Unavailable
from common.observability import logger, traced
from process_image import images

if TYPE_CHECKING:
    import openai

    from process_image.catalog import Tool
    from process_image.settings import Settings

#: Part of every AI generation's cache key, with the prompt version and the model: raise
#: it when what is sent changes (input size, encoding, provider options handling).
ENGINE_VERSION = 1
#: Long side of the image sent to the provider (its outputs are at most 1536 px).
MAX_INPUT_SIDE = 2048
#: Options a catalog row may pass to ``images.edit`` (anything else is refused).
ALLOWED_OPTIONS = frozenset({"background", "input_fidelity", "quality", "output_format", "size"})
#: Provider error codes that mean it refused the image's content (422, not 502).
REFUSAL_CODES = ("moderation_blocked", "content_policy_violation")
#: Time kept back from the Lambda deadline for storing the result and answering.
DEADLINE_MARGIN_S = 10.0

_clients: dict[tuple[str, str | None], openai.OpenAI] = {}
_clients_lock = threading.Lock()


class AIUnavailable(Unavailable):
    """No OpenAI key is configured: AI tools are off, nothing is charged."""

    code = "ai_unavailable"


def api_key() -> str | None:
    """The OpenAI key, or None when none is configured (or its parameter can't be read)."""
    try:
        return config.secret("OPENAI_API_KEY")
    except Exception as exc:  # an SSM/Secrets Manager failure: AI is off, not a 500
        logger.warning("OpenAI key could not be read", extra={"error": type(exc).__name__})
        return None


def require_available() -> str:
    key = api_key()
    if not key:
        raise AIUnavailable("AI tools are not available right now")
    return key


def render_prompt(tool: Tool, params: dict[str, Any]) -> str:
    """The tool's prompt template with enum parameter values (underscores read as spaces)."""
    if not tool.prompt_template:
        raise ConfigError(f"tool {tool.id} has no prompt template")
    template = string.Template(tool.prompt_template)
    if not template.is_valid():
        raise ConfigError(f"tool {tool.id} has a malformed prompt template")
    properties = tool.params_schema.get("properties", {})
    values = {}
    for name in template.get_identifiers():
        spec = properties.get(name) or {}
        enum = spec.get("enum")
        if not enum or not all(isinstance(v, str) for v in enum):
            raise ConfigError(f"tool {tool.id}: prompt placeholder {name} is not a string enum parameter")
        value = params.get(name)
        if not isinstance(value, str) or value not in enum:  # validated already; keeps the prompt bounded
            raise InvalidInput(f"params.{name} must be one of the listed values", code="invalid_params")
        values[name] = value.replace("_", " ")
    return template.substitute(values)


def provider_options(tool: Tool) -> dict[str, Any]:
    unknown = set(tool.ai_options) - ALLOWED_OPTIONS
    if unknown:
        raise ConfigError(f"tool {tool.id} has unsupported ai_options: {sorted(unknown)}")
    return dict(tool.ai_options)


@traced
def run(tool: Tool, params: dict[str, Any], decoded: images.Decoded, *, model: str, user_id: str,
        settings: Settings, deadline: float | None = None) -> images.Encoded:
    """Edit the image with the tool's prompt; the result without metadata.

    ``deadline`` is a ``time.monotonic()`` value (the Lambda's), or None.
    """
    key = require_available()
    prompt = render_prompt(tool, params)
    options = provider_options(tool)
    source = provider_input(decoded)
    timeout = attempt_timeout(settings, settings.AI_MAX_RETRIES + 1, deadline)
    client = client_for(key).with_options(max_retries=settings.AI_MAX_RETRIES, timeout=timeout)
    started = time.perf_counter()
    with provider_errors("image edit", tool.id, model, timeout):
        response = client.images.edit(
            model=model, image=(f"source.{source.extension}", source.data, source.content_type),
            prompt=prompt, n=1,
            safety_identifier=safety_identifier(user_id),
            **options,
        )
    logger.info("image edit done", extra={"tool": tool.id, "model": model,
                                          "ms": round((time.perf_counter() - started) * 1000)})
    return _result(tool, response, settings.IMAGE_MAX_PIXELS)


@contextmanager
def provider_errors(what: str, tool_id: str, model: str, timeout: float) -> Iterator[None]:
    """OpenAI's errors as the API's: a timeout (after the SDK's retries) is 504, the
    provider refusing the image's content 422 ``content_rejected``, anything else 502.
    Logged with status and provider code only; nothing is chained (``from None``)."""
    import openai

    try:
        yield
    except openai.APITimeoutError:
        logger.warning(f"{what} timed out", extra={"tool": tool_id, "model": model, "timeout_s": timeout})
        raise GatewayTimeout("the image service did not answer in time") from None
    except openai.BadRequestError as exc:
        if provider_code(exc) in REFUSAL_CODES:
            raise InvalidInput("the image service refused this image", code="content_rejected") from None
        logger.error(f"{what} refused", extra={"tool": tool_id, "model": model, "status": 400,
                                               "provider_code": provider_code(exc)})
        raise BadGateway("the image service refused the request") from None
    except openai.APIStatusError as exc:
        logger.error(f"{what} failed", extra={"tool": tool_id, "model": model,
                                              "status": exc.status_code, "provider_code": provider_code(exc)})
        raise BadGateway("the image service failed") from None
    except openai.OpenAIError as exc:  # connection errors, malformed responses
        logger.error(f"{what} failed", extra={"tool": tool_id, "model": model, "error": type(exc).__name__})
        raise BadGateway("the image service could not be reached") from None


def attempt_timeout(settings: Settings, attempts: int, deadline: float | None) -> float:
    """AI_TIMEOUT_S, shortened so that ``attempts`` requests end before the Lambda deadline
    (a ``time.monotonic()`` value, or None) with DEADLINE_MARGIN_S to spare."""
    timeout = settings.AI_TIMEOUT_S
    if deadline is not None:
        budget = (deadline - time.monotonic() - DEADLINE_MARGIN_S) / attempts
        if budget < timeout:
            timeout = max(budget, 1.0)
    return timeout


def safety_identifier(user_id: str) -> str:
    """What OpenAI gets to tell users apart for abuse monitoring: a hash, never the id."""
    return hashlib.sha256(str(user_id).encode()).hexdigest()


def client_for(key: str) -> openai.OpenAI:
    """One SDK client (and so one HTTP connection pool) per key and base URL."""
    import os

    import openai

    # OPENAI_BASE_URL is the SDK's own override (tests: the fake server); read it here
    # so a client made for one URL is never reused for another.
    cache_key = (hashlib.sha256(key.encode()).hexdigest(), os.environ.get("OPENAI_BASE_URL") or None)
    client = _clients.get(cache_key)
    if client is None:
        with _clients_lock:
            client = _clients.get(cache_key)
            if client is None:
                client = openai.OpenAI(api_key=key, base_url=cache_key[1])
                _clients[cache_key] = client
    return client


def provider_input(decoded: images.Decoded, max_side: int = MAX_INPUT_SIDE,
                   quality: int = 95) -> images.Encoded:
    """What leaves for the provider: the upright image, at most ``max_side`` px on its long
    side, re-encoded without metadata (PNG when it has transparency, else JPEG)."""
    from PIL import Image, ImageOps

    im = decoded.image
    if max(im.size) > max_side:
        im = ImageOps.contain(im, (max_side, max_side), Image.Resampling.LANCZOS)
    else:
        im = im.copy()  # encode() empties info: leave the caller's image as it was
    fmt = "png" if im.mode in ("RGBA", "LA") else "jpeg"
    return images.encode(im, fmt, quality=quality)


def _result(tool: Tool, response: Any, max_pixels: int) -> images.Encoded:
    data = getattr(response, "data", None) or []
    b64 = getattr(data[0], "b64_json", None) if data else None
    if not b64:
        raise BadGateway("the image service returned no image")
    try:
        raw = base64.b64decode(b64, validate=True)
        decoded = images.decode(raw, max_pixels=max_pixels)
    except (ValueError, InvalidInput):
        raise BadGateway("the image service returned an unreadable image") from None
    return images.encode(decoded.image, tool.output_format or "png")


def provider_code(exc: Any) -> str | None:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(code := err.get("code"), str):
            return code
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else None
