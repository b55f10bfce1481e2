"""A local HTTP server that speaks the parts of the OpenAI API the project uses, so the
real ``openai`` SDK code path runs in tests: chat completions (structured output, with
image inputs for vision), image edits and audio transcriptions. Tests script responses,
delays and errors per path; every request is recorded for assertions.

Unscripted requests get OpenAI-shaped defaults: a chat completion asking for a JSON schema
is answered with an instance of that schema (``schema_instance``); an image input that is
not a decodable data URL, or a transcription upload without a file, is a 400 with
OpenAI's error body; a transcription answers ``DEFAULT_TRANSCRIPT`` in the requested
format (``verbose_json`` with language and duration, ``json``, or ``text``)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devkit.fake_http import Default, FakeServer, Recorded, Scripted

__all__ = ["DEFAULTS", "DEFAULT_TRANSCRIPT", "TINY_PNG", "FakeOpenAI", "Recorded", "Scripted",
           "chat_completion", "error_body", "image_inputs", "image_result", "multipart_fields",
           "schema_instance", "transcription"]

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
        answer = DEFAULTS.get(request.path)
        if answer is None:
            return request.path, lambda _req: (404, error_body("not scripted", "invalid_request_error"))
        return request.path, answer


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


DEFAULT_TRANSCRIPT = "Today I walked by the sea and felt calm and grateful."


def transcription(text: str = DEFAULT_TRANSCRIPT, *, language: str = "english", duration: float = 3.0,
                  response_format: str = "verbose_json") -> Any:
    """An audio.transcriptions answer in ``response_format`` (bytes for ``text``)."""
    if response_format == "text":
        return text.encode()
    if response_format == "verbose_json":
        return {"task": "transcribe", "language": language, "duration": duration, "text": text,
                "segments": [], "usage": {"type": "duration", "seconds": round(duration)}}
    return {"text": text, "usage": {"type": "duration", "seconds": round(duration)}}


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def multipart_fields(request: Recorded) -> dict[str, bytes]:
    """The fields of a multipart/form-data request body (file fields by their name)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    head = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.body)
    fields: dict[str, bytes] = {}
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = part.get_payload(decode=True) or b""
    return fields


def image_inputs(request: Recorded) -> list[bytes]:
    """The images of a chat completion request's user content (data URLs decoded)."""
    found = []
    for message in request.json().get("messages", []):
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = str((part.get("image_url") or {}).get("url", ""))
                header, _, data = url.partition(",")
                if not header.startswith("data:image/") or not header.endswith(";base64"):
                    raise ValueError("not a base64 image data URL")
                found.append(base64.b64decode(data, validate=True))
    return found


def schema_instance(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """A small valid instance of a (strict structured-output) JSON schema: every property,
    one item per array, the first enum value, the first non-null type."""
    root = root or schema
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return schema_instance(target, root)
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"] or schema["anyOf"]
        return schema_instance(options[0], root)
    if "enum" in schema:
        return next((v for v in schema["enum"] if v is not None), None)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {name: schema_instance(spec, root) for name, spec in schema.get("properties", {}).items()}
    if kind == "array":
        return [schema_instance(schema.get("items", {}), root)]
    return {"string": "example", "number": 0.5, "integer": 1, "boolean": False, "null": None}[kind]


def _chat(request: Recorded) -> tuple[int, Any]:
    try:
        body = request.json()
        image_inputs(request)
    except ValueError:
        return 400, error_body("Invalid image: expected a base64-encoded data URL with an image MIME type.",
                               "invalid_request_error", "invalid_image_format")
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        content: Any = schema_instance(fmt["json_schema"]["schema"])
    else:
        content = "ok"
    return 200, chat_completion(content, model=body.get("model", "gpt-4o-mini"))


def _transcribe(request: Recorded) -> tuple[int, Any]:
    fields = multipart_fields(request)
    if not fields.get("file") or not fields.get("model"):
        return 400, error_body("you must provide a file and a model", "invalid_request_error")
    fmt = fields.get("response_format", b"json").decode()
    return 200, transcription(response_format=fmt)


DEFAULTS: dict[str, Callable[[Recorded], tuple[int, Any]]] = {
    "/v1/images/edits": lambda _req: (200, image_result()),
    "/v1/chat/completions": _chat,
    "/v1/audio/transcriptions": _transcribe,
}
