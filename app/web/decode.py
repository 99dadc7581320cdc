"""Find the QR code in an uploaded photo, for scanners whose browser cannot decode it."""
from __future__ import annotations

import io

import zxingcpp
from PIL import Image

from ..errors import DomainError

MAX_IMAGE_BYTES = 2 * 1024 * 1024
# Beyond this many pixels a 2 MiB file is a decompression bomb or a camera we need not serve.
MAX_PIXELS = 24_000_000
# Codes are large in a photo of a phone screen; decoding at this size keeps CPU and memory small.
DECODE_SIDE = 2048


def read_qr(data: bytes) -> str:
    """The text of the QR code in a PNG or JPEG image; `token_malformed` when there is none."""
    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DomainError("invalid_request", "The image has too many pixels; send a smaller photo")
            img.draft("L", (DECODE_SIDE, DECODE_SIDE))  # JPEG only: decode at a reduced scale cheaply
            gray = img.convert("L")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise DomainError("invalid_request", "The upload is not a readable PNG or JPEG image") from None
    gray.thumbnail((DECODE_SIDE, DECODE_SIDE))
    found = zxingcpp.read_barcode(gray, formats=zxingcpp.BarcodeFormat.QRCode)
    if found is None or not found.text:
        raise DomainError("token_malformed", "No QR code was found in the image")
    return found.text
