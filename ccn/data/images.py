"""Image decoding, resizing and encoding (Pillow).

Decoding goes by content, never by file name (ImageNet has a PNG named .JPEG and CMYK and
grayscale JPEGs); every image comes out RGB (transparency over white; 16-bit samples as
value / 257, rounded). EXIF orientation is not applied: pixels are used as stored, as
cuda-convnet's make-data (PIL without EXIF handling) used them. A file Pillow cannot decode completely raises
:class:`BadImage` with the reason, so callers can report it and skip it.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

Image.MAX_IMAGE_PIXELS = 20000 * 20000  # ImageNet has a few very large images; anything bigger is refused


class BadImage(Exception):
    """An image that cannot be decoded; the message says why."""


def open_rgb(data: bytes, shorter_at_least: int | None = None) -> Image.Image:
    """Decode ``data`` (any format Pillow knows) into an RGB image; ``shorter_at_least`` lets the
    JPEG decoder scale down by a power of two while keeping the shorter side at least that long."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            if shorter_at_least and im.format == "JPEG":
                w, h = im.size
                m = min(w, h)
                if m >= 2 * shorter_at_least:
                    im.draft(im.mode if im.mode in ("L", "RGB") else None,
                             (-(-w * shorter_at_least // m), -(-h * shorter_at_least // m)))
            im.load()
    except Exception as e:  # Pillow raises many kinds: OSError, SyntaxError, ValueError, ...
        raise BadImage(_reason(e)) from None
    if im.mode == "RGB":
        return im
    try:
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(bg, im).convert("RGB")
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            # 16-bit to 8-bit by a fixed rule, value / 257 rounded (65535 -> 255), as Pillow scales
            # 16-bit RGB; never stretched to the image's own range (a dark image stays dark)
            a = np.asarray(im, dtype=np.float64)
            a = np.clip(np.rint(a / 257.0), 0, 255)
            return Image.fromarray(a.astype(np.uint8)).convert("RGB")
        return im.convert("RGB")
    except Exception as e:
        raise BadImage(_reason(e)) from None


def _reason(e: Exception) -> str:
    msg = str(e) or type(e).__name__
    if "cannot identify image file" in msg:
        return "not an image Pillow can read"
    return msg


def resize_shorter(im: Image.Image, size: int) -> Image.Image:
    """Scale so the shorter side is ``size`` (antialiased)."""
    w, h = im.size
    if min(w, h) == size:
        return im
    if w <= h:
        nw, nh = size, max(1, round(h * size / w))
    else:
        nw, nh = max(1, round(w * size / h)), size
    return im.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)


def centre_crop(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    x, y = (w - size) // 2, (h - size) // 2
    return im.crop((x, y, x + size, y + size))


def prepare_image(data: bytes, size: int, crop: bool) -> Image.Image:
    """Decode, force RGB, shorter side to ``size``, optionally centre-crop to size x size."""
    im = open_rgb(data, shorter_at_least=size)
    im = resize_shorter(im, size)
    if crop:
        im = centre_crop(im, size)
    return im


def encode_jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg_array(data: bytes) -> np.ndarray:
    """Decode stored image bytes to H x W x 3 uint8."""
    return np.asarray(open_rgb(data))
