"""Checking attachments before anything is sent anywhere: the bytes are the declared kind,
readable, and within the limits (audio duration, image pixels).

- Audio: the container's signature must match the declared type, and its duration is
  read from the container (mutagen for M4A, MP3, WAV and Ogg; ``webm_duration`` below for
  WebM, which mutagen does not read). Unreadable is ``invalid_audio``; longer than the
  limit ``audio_too_long`` (both 422).
- Images: only the JPEG, PNG, WebP and HEIF decoders are tried; the pixel count is read
  from the header and checked before decoding (a decompression bomb costs no memory);
  the upright image (EXIF orientation applied) is re-encoded as a JPEG of at most
  ``VISION_MAX_SIDE`` px without metadata: that, not the upload, is what the vision model
  gets (no GPS position leaves).

mutagen and Pillow are imported on first use.
"""

from __future__ import annotations

import io
import struct
import threading

from common.errors import InvalidInput

#: Upload content types -> (kind, file extension). OpenAI transcribes all these containers.
AUDIO_TYPES = {
    "audio/mp4": "m4a", "audio/x-m4a": "m4a", "audio/m4a": "m4a", "audio/mpeg": "mp3", "audio/mp3": "mp3",
    "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/webm": "webm", "audio/ogg": "ogg",
}
IMAGE_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/heic": "heic",
               "image/heif": "heif"}
#: Long side of the JPEG the vision model gets.
VISION_MAX_SIDE = 1024
_DECODERS = ("JPEG", "PNG", "WEBP")

_heif_lock = threading.Lock()
_heif_registered = False


class InvalidAudio(InvalidInput):
    code = "invalid_audio"


class AudioTooLong(InvalidInput):
    code = "audio_too_long"


class InvalidImage(InvalidInput):
    code = "invalid_image"


class ImageTooLarge(InvalidInput):
    code = "image_too_large"


def kind_of(content_type: str) -> tuple[str, str] | None:
    """(``audio`` | ``image``, extension) of an accepted content type, else None."""
    declared = content_type.strip().lower()
    if declared in AUDIO_TYPES:
        return "audio", AUDIO_TYPES[declared]
    if declared in IMAGE_TYPES:
        return "image", IMAGE_TYPES[declared]
    return None


# --- audio -------------------------------------------------------------------------------


def audio_duration(data: bytes, extension: str) -> float:
    """Seconds of audio in ``data``, a file of type ``extension`` (m4a, mp3, wav, webm,
    ogg); InvalidAudio when it is not one, or unreadable."""
    if not _signature_matches(data, extension):
        raise InvalidAudio("the file is not the audio type it was uploaded as")
    try:
        seconds = webm_duration(data) if extension == "webm" else _mutagen_duration(data, extension)
    except (ValueError, IndexError, struct.error):
        seconds = None
    except Exception as exc:  # mutagen's own errors (MutagenError and format-specific ones)
        if type(exc).__module__.startswith("mutagen"):
            seconds = None
        else:
            raise
    if seconds is None or not seconds > 0:
        raise InvalidAudio("the audio file is corrupt or has no audio")
    return float(seconds)


def _signature_matches(data: bytes, extension: str) -> bool:
    head = data[:12]
    if extension == "m4a":
        return head[4:8] == b"ftyp"
    if extension == "mp3":
        return head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
    if extension == "wav":
        return head[:4] == b"RIFF" and head[8:12] == b"WAVE"
    if extension == "ogg":
        return head[:4] == b"OggS"
    if extension == "webm":
        return head[:4] == b"\x1a\x45\xdf\xa3"
    return False


def _mutagen_duration(data: bytes, extension: str) -> float | None:
    import mutagen
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.wave import WAVE

    if extension == "ogg":  # Opus, Vorbis, Speex, FLAC in Ogg: mutagen picks by content
        parsed = mutagen.File(io.BytesIO(data))
    else:
        readers: dict[str, type[mutagen.FileType]] = {"m4a": MP4, "mp3": MP3, "wav": WAVE}
        parsed = readers[extension](io.BytesIO(data))
    info = getattr(parsed, "info", None)
    return getattr(info, "length", None)


# WebM (Matroska) element ids.
_EBML, _DOCTYPE, _SEGMENT = 0x1A45DFA3, 0x4282, 0x18538067
_INFO, _TIMECODE_SCALE, _DURATION = 0x1549A966, 0x2AD7B1, 0x4489
_CLUSTER, _TIMECODE, _SIMPLE_BLOCK, _BLOCK_GROUP, _BLOCK = 0x1F43B675, 0xE7, 0xA3, 0xA0, 0xA1
_TOP_LEVEL = frozenset({0x114D9B74, _INFO, 0x1654AE6B, _CLUSTER, 0x1C53BB6B, 0x1043A770, 0x1254C367,
                        0x1941A469})
_UNKNOWN = -1


def webm_duration(data: bytes) -> float | None:
    """Seconds of a WebM file: the Segment Info's Duration when there is one, else the
    latest block timestamp (browsers' MediaRecorder writes no Duration and streams with
    unknown sizes). Hand-written because no maintained pure-Python library reads WebM
    (mutagen and tinytag don't; PyAV would bring ~95 MB of FFmpeg for one number); it
    reads element headers only, in one pass."""
    pos, end = 0, len(data)
    element, size, pos = _element(data, pos)
    if element != _EBML or size == _UNKNOWN:
        return None
    if _child(data, pos, pos + size, _DOCTYPE) != b"webm":
        return None
    pos += size
    element, size, pos = _element(data, pos)
    if element != _SEGMENT:
        return None
    segment_end = end if size == _UNKNOWN else min(pos + size, end)
    scale, duration, latest = 1_000_000, None, None
    while pos < segment_end:
        element, size, body = _element(data, pos)
        if element == _INFO and size != _UNKNOWN:
            raw_scale = _child(data, body, body + size, _TIMECODE_SCALE)
            if raw_scale:
                scale = int.from_bytes(raw_scale, "big") or scale
            raw = _child(data, body, body + size, _DURATION)
            if raw and len(raw) in (4, 8):
                duration = struct.unpack(">f" if len(raw) == 4 else ">d", raw)[0]
            pos = body + size
        elif element == _CLUSTER:
            pos, last = _cluster(data, body, end if size == _UNKNOWN else min(body + size, end))
            if last is not None:
                latest = last if latest is None else max(latest, last)
        elif size == _UNKNOWN:
            break
        else:
            pos = body + size
    ticks = duration if duration else latest
    return ticks * scale / 1e9 if ticks is not None else None


def _cluster(data: bytes, pos: int, end: int) -> tuple[int, float | None]:
    """(where the cluster ends, its latest block timestamp in ticks). A cluster of unknown
    size ends where the next top-level element starts."""
    base, latest = 0, None
    while pos < end:
        element, size, body = _element(data, pos)
        if element in _TOP_LEVEL:
            return pos, latest
        if size == _UNKNOWN:
            break
        if element == _TIMECODE:
            base = int.from_bytes(data[body:body + size], "big")
        elif element in (_SIMPLE_BLOCK, _BLOCK_GROUP):
            block = body
            if element == _BLOCK_GROUP:
                inner = _child_at(data, body, body + size, _BLOCK)
                block = _element(data, inner)[2] if inner is not None else -1
            if block >= 0:
                _track, _size, after = _vint(data, block, keep_marker=False)
                relative = struct.unpack(">h", data[after:after + 2])[0]
                stamp = base + relative
                latest = stamp if latest is None else max(latest, stamp)
        pos = body + size
    return end, latest


def _child(data: bytes, pos: int, end: int, wanted: int) -> bytes | None:
    at = _child_at(data, pos, end, wanted)
    if at is None:
        return None
    _element_id, size, body = _element(data, at)
    return data[body:body + size]


def _child_at(data: bytes, pos: int, end: int, wanted: int) -> int | None:
    while pos < end:
        element, size, body = _element(data, pos)
        if element == wanted:
            return pos
        if size == _UNKNOWN:
            return None
        pos = body + size
    return None


def _element(data: bytes, pos: int) -> tuple[int, int, int]:
    element, _length, pos = _vint(data, pos, keep_marker=True)
    size, length, pos = _vint(data, pos, keep_marker=False)
    if size == (1 << (7 * length)) - 1:  # all value bits set: unknown size
        size = _UNKNOWN
    elif pos + size > len(data) + 0:
        size = max(len(data) - pos, 0)  # a truncated file: read what is there
    return element, size, pos


def _vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int, int]:
    """An EBML variable-length integer at ``pos``: (value, its length in bytes, next pos)."""
    first = data[pos]
    if first == 0:
        raise ValueError("invalid EBML integer")
    length = 9 - first.bit_length()
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[pos + 1:pos + length]:
        value = (value << 8) | byte
    if pos + length > len(data):
        raise ValueError("truncated EBML integer")
    return value, length, pos + length


# --- images ------------------------------------------------------------------------------


def vision_jpeg(data: bytes, *, max_pixels: int) -> bytes:
    """The photo, upright, at most VISION_MAX_SIDE px, as a JPEG without any metadata."""
    from PIL import Image, ImageOps

    formats = _decoders()
    try:
        im: Image.Image = Image.open(io.BytesIO(data), formats=formats)
    except (OSError, SyntaxError, ValueError, EOFError):
        raise InvalidImage("the file is not a readable JPEG, PNG, WebP or HEIC image") from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"photos may have at most {max_pixels} pixels") from None
    width, height = im.size
    if width <= 0 or height <= 0:
        raise InvalidImage("the image has no pixels")
    if width * height > max_pixels:  # from the header: nothing decoded yet
        raise ImageTooLarge(f"photos may have at most {max_pixels} pixels")
    try:
        im.draft("RGB", (VISION_MAX_SIDE, VISION_MAX_SIDE))  # JPEG: decode at a smaller scale
        im = ImageOps.exif_transpose(im) or im
        im = im.convert("RGB")
        im = ImageOps.contain(im, (VISION_MAX_SIDE, VISION_MAX_SIDE), Image.Resampling.LANCZOS) \
            if max(im.size) > VISION_MAX_SIDE else im
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"photos may have at most {max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError, KeyError, IndexError, TypeError):
        raise InvalidImage("the image data is corrupt or truncated") from None
    im.info = {}
    out = io.BytesIO()
    im.save(out, "JPEG", quality=88)
    return out.getvalue()


def _decoders() -> list[str]:
    global _heif_registered
    import importlib.util

    if importlib.util.find_spec("pillow_heif") is None:
        return list(_DECODERS)
    if not _heif_registered:
        with _heif_lock:
            if not _heif_registered:
                from pillow_heif import register_heif_opener

                register_heif_opener()
                _heif_registered = True
    return [*_DECODERS, "HEIF"]
