"""The local tools: plain Pillow operations, no AI.

Each operation takes an upright RGB(A)/L(A) image (``images.decode`` applied the
orientation tag already) and the tool's validated parameters, and returns the new
image. Sizes a tool would produce are checked against the pixel limit before the work.
Every output is encoded by ``images.encode``, which writes no EXIF/GPS or other metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from common.errors import InvalidInput
from process_image import images

if TYPE_CHECKING:
    from PIL import Image

    from process_image.catalog import Tool

#: Part of every local generation's cache key: raise it when an operation's output for
#: the same input and parameters changes (a new resampling filter, other encoder options).
ENGINE_VERSION = 1

JPEG_QUALITY = 90

Operation = Callable[["Image.Image", dict[str, Any], int], "Image.Image"]


def run(tool: Tool, params: dict[str, Any], decoded: images.Decoded, *, max_pixels: int) -> images.Encoded:
    operation = OPERATIONS.get(tool.id)
    if operation is None:
        raise InvalidInput("this tool is not available here", code="unknown_tool")
    result = operation(decoded.image, params, max_pixels)
    fmt = params.get("format") or tool.output_format or images.DEFAULT_OUTPUT[decoded.format]
    quality = int(params.get("quality", JPEG_QUALITY))
    return images.encode(result, fmt, quality=quality, icc_profile=decoded.icc_profile)


def resize(im: Image.Image, params: dict[str, Any], max_pixels: int) -> Image.Image:
    from PIL import Image, ImageOps

    width, height = params.get("width"), params.get("height")
    # keep the aspect ratio from the one side given
    if height is None:
        if width is None:  # the schema requires one (anyOf)
            raise InvalidInput("params needs a width or a height", code="invalid_params")
        height = max(1, round(im.height * int(width) / im.width))
    elif width is None:
        width = max(1, round(im.width * int(height) / im.height))
    box = (int(width), int(height))
    images.check_pixels(*box, max_pixels)
    fit = params.get("fit", "contain")
    if fit == "cover":
        return ImageOps.fit(im, box, Image.Resampling.LANCZOS)
    if fit == "stretch" or "width" not in params or "height" not in params:
        return im.resize(box, Image.Resampling.LANCZOS)
    return ImageOps.contain(im, box, Image.Resampling.LANCZOS)


def crop(im: Image.Image, params: dict[str, Any], max_pixels: int) -> Image.Image:
    left, top = int(params["left"]), int(params["top"])
    right, bottom = left + int(params["width"]), top + int(params["height"])
    if right > im.width or bottom > im.height:
        raise InvalidInput("the crop box lies outside the image", code="invalid_params")
    return im.crop((left, top, right, bottom))


def rotate(im: Image.Image, params: dict[str, Any], max_pixels: int) -> Image.Image:
    from PIL import Image

    angle = float(params["angle"]) % 360  # clockwise
    exact = {90.0: Image.Transpose.ROTATE_270, 180.0: Image.Transpose.ROTATE_180,
             270.0: Image.Transpose.ROTATE_90}  # Pillow's transposes turn counter-clockwise
    if angle == 0:
        return im
    if angle in exact and (params.get("expand", True) or angle == 180.0):
        return im.transpose(exact[angle])
    if params.get("expand", True):
        import math

        rad = math.radians(angle)
        cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
        images.check_pixels(math.ceil(im.width * cos + im.height * sin),
                            math.ceil(im.width * sin + im.height * cos), max_pixels)
    if im.mode in ("RGB", "L"):  # the corners uncovered become transparent
        im = im.convert("RGBA" if im.mode == "RGB" else "LA")
    return im.rotate(-angle, resample=Image.Resampling.BICUBIC, expand=bool(params.get("expand", True)))


def auto_orient(im: Image.Image, params: dict[str, Any], max_pixels: int) -> Image.Image:
    return im  # decoding applied the orientation tag already


def grayscale(im: Image.Image, params: dict[str, Any], max_pixels: int) -> Image.Image:
    return im.convert("LA" if im.mode in ("RGBA", "LA") else "L")


def blur(im: Image.Image, params: dict[str, Any], max_pixels: int) -> Image.Image:
    from PIL import ImageFilter

    return im.filter(ImageFilter.GaussianBlur(radius=float(params.get("radius", 2))))


def sharpen(im: Image.Image, params: dict[str, Any], max_pixels: int) -> Image.Image:
    from PIL import ImageFilter

    mask = ImageFilter.UnsharpMask(radius=float(params.get("radius", 2)),
                                   percent=int(params.get("percent", 150)),
                                   threshold=int(params.get("threshold", 3)))
    return im.filter(mask)


def thumbnail(im: Image.Image, params: dict[str, Any], max_pixels: int) -> Image.Image:
    from PIL import Image

    size = int(params.get("size", 256))
    im.thumbnail((size, size), Image.Resampling.LANCZOS)  # in place: the decoded image is ours
    return im


def unchanged(im: Image.Image, params: dict[str, Any], max_pixels: int) -> Image.Image:
    return im  # convert and strip_metadata: the encoding is the work


OPERATIONS: dict[str, Operation] = {
    "resize": resize,
    "crop": crop,
    "rotate": rotate,
    "auto_orient": auto_orient,
    "grayscale": grayscale,
    "blur": blur,
    "sharpen": sharpen,
    "thumbnail": thumbnail,
    "convert": unchanged,
    "strip_metadata": unchanged,
}
