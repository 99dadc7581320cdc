"""Institution API: OAuth client credentials, scans, the revocation feed."""
from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from flask import Blueprint, Response, g, jsonify, request

from crypto import tokens

from ..errors import DomainError
from ..extensions import runtime
from ..services import institutions, keys, revocations, scans
from ..text import plain_text
from .auth import INSTITUTION_AUD, institution_required
from .schema import Field, body, cursor, json_object

bp = Blueprint("institutions", __name__, url_prefix="/v1")


def _basic_credentials() -> tuple[str, str]:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        client_id, sep, secret = decoded.partition(":")
        client_id, secret = unquote(client_id), unquote(secret)
        if sep and plain_text(client_id) and plain_text(secret):
            # RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding
            return client_id, secret
    raise DomainError("unauthorized", "Client credentials are required (HTTP Basic)",
                      headers={"WWW-Authenticate": 'Basic realm="evoucher"'}, error="invalid_client")


@bp.post("/oauth/token")
def oauth_token():
    if request.mimetype == "application/x-www-form-urlencoded":
        grant = request.form.get("grant_type")
    else:
        try:
            grant = json_object().get("grant_type")
        except DomainError:  # not a JSON object: answered as a missing grant type below
            grant = None
    if grant != "client_credentials":  # RFC 6749 §5.2: a missing parameter is invalid_request
        raise DomainError("invalid_request", "grant_type must be client_credentials",
                          error="invalid_request" if grant in (None, "") else "unsupported_grant_type")
    client_id, secret = _basic_credentials()
    rt = runtime()
    session = rt.session()
    inst = institutions.authenticate(session, client_id, secret)
    ttl = rt.config.institution_token_ttl
    token = tokens.issue_access(keys.keyring(rt, session).current, subject=inst.code, audience=INSTITUTION_AUD,
                                ttl=ttl, now=int(rt.clock.now()), issuer=rt.config.issuer,
                                claims={"cid": inst.client_id, "sv": institutions.secret_tag(inst.secret_hash)})
    # RFC 6749 §5.1 lets a token response carry more members: `scan_purposes` tells the desk page
    # which purposes to offer (its own kind's; a new kind comes with a new secret, ending this token).
    return jsonify(access_token=token, token_type="Bearer", expires_in=ttl,
                   scan_purposes=list(scans.KIND_PURPOSES.get(inst.kind, ())))


def calling_institution(*, scanning: bool = False):
    """The calling institution. An inactive one is refused here, whatever it asks, as at the
    token endpoint; a scan refuses it itself (scans.scan, counted in the scan metrics)."""
    rt = runtime()
    inst = institutions.cached(rt, g.auth["sub"])
    if inst is None or g.auth.get("sv") != inst.secret_tag:  # re-keyed since: the old secret's tokens end
        raise DomainError("unauthorized", "The access token is invalid or expired",
                          headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if inst.status != "active" and not scanning:
        raise DomainError("institution_inactive", "This institution is not active")
    return rt, inst


SCAN_BODY = {"token": Field(str, max_len=2048), "purpose": Field(str, choices=scans.PURPOSES)}


@bp.post("/scans")
@institution_required
def create_scan():
    data = body(SCAN_BODY)
    rt, inst = calling_institution(scanning=True)
    answer = scans.scan(rt, inst, data["token"], data["purpose"])  # JSON text, serialized once
    return Response(answer + "\n", mimetype="application/json")


@bp.get("/scans/<scan_id>")
@institution_required
def get_scan(scan_id: str):
    rt, inst = calling_institution()
    return jsonify(scans.get(rt.session(), inst, scan_id))


@bp.get("/revocations")
@institution_required
def revocation_feed():
    rt, _ = calling_institution()
    return jsonify(revocations.feed(rt.session(), cursor(request.args.get("since"), "since") or 0))
