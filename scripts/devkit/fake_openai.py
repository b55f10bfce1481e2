"""A local HTTP server that speaks the parts of the OpenAI API the project uses, so the
real ``openai`` SDK code path runs in tests: chat completions (structured output) and
image edits. Tests script responses, delays and errors per path; every request is
recorded for assertions."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devkit.fake_http import Default, FakeServer, Recorded, Scripted

__all__ = ["DEFAULTS", "TINY_PNG", "FakeOpenAI", "Recorded", "Scripted", "chat_completion", "image_result"]

#: A valid 1x1 PNG, the default image an edit returns.
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@dataclass
class FakeOpenAI(FakeServer):
    url_suffix = "/v1"

    def script(self, path: str, *responses: Scripted) -> None:
        """Queue responses for ``path`` (e.g. "/v1/chat/completions"), used in order."""
        self._queue(path, responses)

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def route(self, request: Recorded) -> tuple[str, Default]:
        answer = DEFAULTS.get(request.path, lambda _req: {"error": {"message": "not scripted"}})
        return request.path, lambda req: (200, answer(req))


def chat_completion(content: str | dict[str, Any], model: str = "gpt-4o-mini") -> dict[str, Any]:
    """A chat.completion response whose message carries ``content`` (JSON for dicts)."""
    text = content if isinstance(content, str) else json.dumps(content)
    return {
        "id": "chatcmpl-local", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": text, "refusal": None}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


def image_result(png: bytes = TINY_PNG) -> dict[str, Any]:
    return {"created": int(time.time()), "data": [{"b64_json": base64.b64encode(png).decode()}]}


DEFAULTS: dict[str, Callable[[Recorded], dict[str, Any]]] = {
    "/v1/images/edits": lambda _req: image_result(),
}
