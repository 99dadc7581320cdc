"""Domain errors and the one place that renders every error as problem+json (RFC 9457)."""
from __future__ import annotations

import logging

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# code -> (HTTP status, default title)
CODES: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "Invalid request"),
    "unsupported_id_type": (422, "Unsupported ID type"),
    "invalid_id_number": (422, "Invalid ID number"),
    "person_not_enrolled": (422, "Person not enrolled"),
    "face_verification_required": (422, "Face verification required"),
    "channel_signature_invalid": (401, "Channel signature invalid"),
    "channel_request_replayed": (401, "Channel request replayed"),
    "channel_unknown": (404, "Channel unknown"),
    "unauthorized": (401, "Unauthorized"),
    "forbidden": (403, "Forbidden"),
    "not_found": (404, "Not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "token_malformed": (400, "Token malformed"),
    "token_signature_invalid": (401, "Token signature invalid"),
    "token_unknown_key": (401, "Token signed by an unknown key"),
    "token_expired": (401, "Token expired"),
    "token_already_used": (409, "Token already used"),
    "token_revoked": (401, "Token revoked"),
    "voucher_not_found": (404, "Voucher not found"),
    "voucher_suspended": (403, "Voucher suspended"),
    "voucher_cancelled": (403, "Voucher cancelled"),
    "institution_inactive": (403, "Institution inactive"),
    "region_not_enrolled": (422, "Region not enrolled"),
    "remote_care_filing_required": (403, "Remote-care filing required"),
    "family_limit_reached": (409, "Family limit reached"),
    "family_link_not_found": (404, "Family link not found"),
    "family_link_exists": (409, "Family link exists"),
    "filing_not_found": (404, "Remote-care filing not found"),
    "reverification_required": (403, "Channel re-verification required"),
    "name_mismatch": (422, "Name does not match the registry"),
    "channel_not_bound": (404, "Channel not bound"),
    "pin_required": (403, "PIN required"),
    "pin_invalid": (403, "PIN invalid"),
    "pin_locked": (423, "PIN locked"),
    "pin_too_weak": (422, "PIN too weak"),
    "pin_change_required": (403, "PIN change required"),
    "rate_limited": (429, "Rate limited"),
    "payload_too_large": (413, "Payload too large"),
    "unsupported_media_type": (415, "Unsupported media type"),
    "service_unavailable": (503, "Service unavailable"),
    "internal_error": (500, "Internal error"),
}

_HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
               429: "rate_limited", 503: "service_unavailable"}


class DomainError(Exception):
    """An expected refusal: carries a stable `code`, a human `detail` and extra members."""

    def __init__(self, code: str, detail: str | None = None, *, status: int | None = None,
                 headers: dict | None = None, **extra):
        if code not in CODES:
            raise ValueError(f"unknown problem code {code!r}")
        self.code = code
        self.status = status or CODES[code][0]
        self.detail = detail or CODES[code][1]
        self.headers = headers or {}
        self.extra = extra
        super().__init__(code)


def problem(code: str, detail: str, status: int, headers: dict | None = None, **extra) -> Response:
    """Build an application/problem+json response."""
    body = {"type": f"https://evoucher.example/problems/{code}", "title": CODES.get(code, (status, code))[1],
            "status": status, "code": code, "detail": detail}
    body.update(extra)
    resp = Response(json.dumps(body, ensure_ascii=False), status=status,
                    mimetype="application/problem+json")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _too_large_detail() -> str:
    """Werkzeug's 413: the body past this route's limit (16 KiB, or the photo upload's 2 MiB), or,
    within it, a form field past the form's in-memory limit or too many form parts."""
    limit, length = request.max_content_length, request.content_length
    if limit is not None and (length is None or length > limit):
        return f"Request body exceeds {limit // 1024} KiB"
    return "A form field is too large, or the form has too many parts"


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def _domain(exc: DomainError):
        return problem(exc.code, exc.detail, exc.status, exc.headers, **exc.extra)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        code = _HTTP_CODES.get(exc.code or 500, "invalid_request" if (exc.code or 500) < 500 else "internal_error")
        detail = {413: _too_large_detail(), 404: "No such resource",
                  405: "Method not allowed on this resource"}.get(exc.code, CODES[code][1])
        headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
        return problem(code, detail, exc.code or 500, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        from .store import ephemeral  # local import: avoids a cycle at start-up
        if isinstance(exc, ephemeral.StoreUnavailable):
            log.warning("ephemeral store unavailable", extra={"path": request.path})
            return problem("service_unavailable", "A backing service is unavailable; try again", 503,
                           {"Retry-After": "1"})
        from sqlalchemy.exc import OperationalError
        if isinstance(exc, OperationalError):
            log.error("database unavailable", extra={"path": request.path})
            return problem("service_unavailable", "The database is unavailable; try again", 503,
                           {"Retry-After": "1"})
        log.exception("unhandled error", extra={"path": request.path})
        return problem("internal_error", "An internal error occurred", 500)
