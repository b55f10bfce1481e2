"""Decoding images safely and encoding them without metadata (Pillow).

Decoding (``decode``):
- only the JPEG, PNG, WebP and (with pillow-heif) HEIF decoders are tried, never the
  other formats Pillow can read (EPS would run Ghostscript);
- the pixel count is read from the header and checked against the limit *before* any
  pixel is decoded, so a decompression bomb (a small file that declares a huge image)
  is refused without allocating its memory; Pillow's own ``DecompressionBombError``
  (over twice ``Image.MAX_IMAGE_PIXELS``) is a second line;
- truncated or corrupt data, and oversized text chunks, are refused as invalid;
- the camera's orientation tag is applied to the pixels (the tag is dropped on output,
  so the picture must already be upright), and odd modes (palette, CMYK, 16-bit) are
  converted to RGB(A)/L(A).

Encoding (``encode``) starts from an empty ``info``: EXIF (GPS position, camera, dates),
XMP, comments and text chunks never reach an output. Only the ICC colour profile is
passed on, when given, so colours stay right.
"""

from __future__ import annotations

import importlib.util
import io
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.errors import InvalidInput

if TYPE_CHECKING:
    from PIL import Image

#: Output formats: name -> (Pillow format, content type, file extension).
FORMATS = {
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
    "png": ("PNG", "image/png", "png"),
    "webp": ("WEBP", "image/webp", "webp"),
}
#: Upload content types -> file extension; HEIC/HEIF only where pillow-heif is installed.
BASE_UPLOAD_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
HEIF_UPLOAD_TYPES = {"image/heic": "heic", "image/heif": "heif"}
#: Pillow decoders tried, by format name.
DECODERS = ("JPEG", "PNG", "WEBP")
#: Source format -> the output format a tool without its own uses.
DEFAULT_OUTPUT = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "HEIF": "jpeg"}

_heif_lock = threading.Lock()
_heif_registered = False


class InvalidImage(InvalidInput):
    """Not an image we can read (corrupt, truncated, another format)."""

    code = "invalid_image"


class ImageTooLarge(InvalidInput):
    """More pixels than IMAGE_MAX_PIXELS, in the source or in what a tool would make."""

    code = "image_too_large"


@dataclass
class Decoded:
    image: Image.Image
    format: str  # JPEG | PNG | WEBP | HEIF
    icc_profile: bytes | None


@dataclass(frozen=True)
class Encoded:
    data: bytes
    content_type: str
    extension: str
    width: int
    height: int


def heif_supported() -> bool:
    return importlib.util.find_spec("pillow_heif") is not None


def upload_types() -> dict[str, str]:
    """Content types accepted for uploads -> file extension."""
    return {**BASE_UPLOAD_TYPES, **(HEIF_UPLOAD_TYPES if heif_supported() else {})}


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise InvalidImage("the image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image may have at most {max_pixels} pixels")


def decode(data: bytes, *, max_pixels: int) -> Decoded:
    """The first frame of the image in ``data``, upright, in RGB(A) or L(A)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    formats = _decoders()
    try:
        im: Image.Image = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"the image may have at most {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise InvalidImage("the file is not a readable JPEG, PNG, WebP or HEIC image") from None
    check_pixels(*im.size, max_pixels)  # from the header: nothing decoded yet
    source_format = str(im.format)
    try:
        im.load()
        icc = im.info.get("icc_profile") or None
        im = ImageOps.exif_transpose(im) or im
        im = _normal_mode(im)
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"the image may have at most {max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError, KeyError, IndexError, TypeError):
        raise InvalidImage("the image data is corrupt or truncated") from None
    return Decoded(im, source_format, icc if isinstance(icc, bytes) else None)


def encode(im: Image.Image, fmt: str, *, quality: int = 90, icc_profile: bytes | None = None) -> Encoded:
    """``im`` in ``fmt`` (jpeg | png | webp) with no metadata but the colour profile.

    ``im.info`` is emptied (the image is the caller's output, not shared), so nothing
    read from the source (EXIF, XMP, comments, PNG text) can be written back.
    """
    pil_format, content_type, extension = FORMATS[fmt]
    if pil_format == "JPEG" and im.mode not in ("RGB", "L"):
        im = _flatten(im)
    elif pil_format == "WEBP" and im.mode in ("L", "LA"):
        im = im.convert("RGBA" if im.mode == "LA" else "RGB")
    im.info = {}
    options: dict[str, Any] = {}
    if pil_format == "JPEG":
        options = {"quality": quality}
    elif pil_format == "WEBP":
        options = {"quality": quality, "method": 4}
    elif pil_format == "PNG":
        options = {"compress_level": 6}
    if icc_profile:
        options["icc_profile"] = icc_profile
    out = io.BytesIO()
    im.save(out, pil_format, **options)
    return Encoded(out.getvalue(), content_type, extension, im.width, im.height)


def _decoders() -> list[str]:
    global _heif_registered
    if not heif_supported():
        return list(DECODERS)
    if not _heif_registered:
        with _heif_lock:
            if not _heif_registered:
                from pillow_heif import register_heif_opener

                register_heif_opener()
                _heif_registered = True
    return [*DECODERS, "HEIF"]


def _normal_mode(im: Image.Image) -> Image.Image:
    """RGB, RGBA, L or LA: the modes every tool and encoder handles."""
    if im.mode in ("RGB", "RGBA", "L", "LA") and "transparency" not in im.info:
        return im
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return im.convert("I").point(lambda v: v / 256).convert("L")  # 16-bit: scale, don't clip
    return im.convert("RGBA" if has_alpha else "RGB")


def _flatten(im: Image.Image) -> Image.Image:
    """Alpha composited onto white (JPEG has no transparency)."""
    from PIL import Image

    rgba = im.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background
