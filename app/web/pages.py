"""The holder and scanner pages, their security headers, and the scanner's photo decoder."""
from __future__ import annotations

from flask import Blueprint, jsonify, render_template, request

from ..api.auth import institution_required
from ..api.institutions import calling_institution
from ..errors import DomainError
from ..services import limits
from . import decode

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/web")

CSP = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
# Multipart framing (boundaries, part headers) around an image of at most MAX_IMAGE_BYTES.
DECODE_BODY_LIMIT = decode.MAX_IMAGE_BYTES + 16 * 1024


@bp.after_request
def _security_headers(resp):
    resp.headers["Content-Security-Policy"] = CSP
    # The holder page's URL fragment carries an access token: never leak the URL anywhere.
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Frame-Options"] = "DENY"
    camera = "(self)" if request.endpoint == "web.scanner" else "()"
    resp.headers["Permissions-Policy"] = f"camera={camera}, microphone=(), geolocation=()"
    return resp


@bp.url_value_preprocessor
def _upload_limit(endpoint, _values):
    """Raise the body limit (16 KiB app-wide) for the photo upload only.

    A URL value preprocessor runs before every before_request hook, the app's own size check
    included, so the larger limit is in place whenever the body length is first compared."""
    if endpoint != "web.scanner_decode":
        return
    request.max_content_length = DECODE_BODY_LIMIT
    if (request.content_length or 0) > DECODE_BODY_LIMIT:
        raise DomainError("payload_too_large", "The image must not exceed 2 MiB")


@bp.get("/m/")
def holder():
    return render_template("holder.html")


@bp.get("/scanner/")
def scanner():
    return render_template("scanner.html")


@bp.post("/scanner/decode")
@institution_required
def scanner_decode():
    rt, inst = calling_institution()  # an active institution whose token was got with its current secret
    # Decoding costs CPU, and a desk without BarcodeDetector sends two camera frames a second:
    # each institution's desks share an allowance, counted before the image is read.
    limits.enforce(rt, "decode", inst.code, rt.config.decode_rate_per_minute,
                   "Too many images from this institution; slow down")
    upload = request.files.get("image")
    if upload is None:
        raise DomainError("invalid_request", "Send the photo as the multipart field 'image'", field="image")
    data = upload.read(decode.MAX_IMAGE_BYTES + 1)
    if len(data) > decode.MAX_IMAGE_BYTES:
        raise DomainError("payload_too_large", "The image must not exceed 2 MiB")
    return jsonify(text=decode.read_qr(data))
