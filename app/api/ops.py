"""Operations: health, readiness, metrics, OpenAPI document and the JWKS."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from .. import metrics
from ..extensions import runtime
from ..services import keys
from ..store.ephemeral import StoreUnavailable

bp = Blueprint("ops", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    rt = runtime()
    checks = {}
    try:
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # readiness reports, it does not raise
        log.warning("readiness: database down", extra={"error": exc.__class__.__name__})
        checks["database"] = "unavailable"
    try:
        rt.store.ping()
        checks["token_store"] = "ok"
    except StoreUnavailable:
        checks["token_store"] = "unavailable"
    checks["token_store_kind"] = rt.store.name
    ready = checks["database"] == "ok" and checks["token_store"] == "ok"
    resp = jsonify(status="ready" if ready else "unavailable", checks=checks)
    if not ready:
        resp.status_code = 503
    return resp


@bp.get("/metrics")
def metrics_text():
    body, ctype = metrics.render()
    return Response(body, content_type=ctype)


@bp.get("/openapi.json")
def openapi():
    from .openapi import document
    return jsonify(document())


@bp.get("/.well-known/jwks.json")
def jwks():
    rt = runtime()
    ring = keys.keyring(rt, rt.session())
    resp = jsonify(ring.jwks(int(rt.clock.now())))  # a key leaves on the dot, not up to 5 s late
    resp.headers["Cache-Control"] = f"public, max-age={keys.JWKS_MAX_AGE}"
    return resp
