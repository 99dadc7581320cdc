"""Channel API: partners activate, open sessions, re-verify and unbind, each call signed (SPEC §5)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from app import channels as signing
from app.channels.common import CHANNEL_USER_PATTERN, METHODS, NONCE_RE

from ..errors import DomainError
from ..extensions import runtime
from ..services import activation, channel_registry, limits
from ..store.ephemeral import StoreUnavailable
from ..store.models import Voucher
from .schema import OPTIONAL_PIN, Field, validate

bp = Blueprint("channels", __name__, url_prefix="/v1/channels")

# A request id is what Alipay's nonce must be (1-64 letters, digits or -_.:), on every channel:
# it keys idempotent activation, and an empty one would be one key shared by every caller.
REQUEST_ID = Field(str, pattern=NONCE_RE.pattern, max_len=64)
OPTIONAL_REQUEST_ID = Field(str, required=False, pattern=NONCE_RE.pattern, max_len=64)
CHANNEL_USER = Field(str, pattern=CHANNEL_USER_PATTERN, max_len=128)
_FIELDS = {
    "activations": {"request_id": REQUEST_ID, "channel_user_id": CHANNEL_USER,
                    "id_type": Field(str, max_len=2), "id_number": Field(str, max_len=32),
                    "name": Field(str, max_len=64), "phone": Field(str, pattern=r"1\d{10}", max_len=11),
                    "face_verified": Field(bool), "pin": OPTIONAL_PIN},
    "sessions": {"channel_user_id": CHANNEL_USER, "request_id": OPTIONAL_REQUEST_ID},
    "reverifications": {"channel_user_id": CHANNEL_USER, "face_verified": Field(bool),
                        "purpose": Field(str, choices=activation.PURPOSES),
                        "link_id": Field(str, required=False, max_len=32),
                        "request_id": OPTIONAL_REQUEST_ID},
    "unbindings": {"channel_user_id": CHANNEL_USER, "request_id": OPTIONAL_REQUEST_ID},
}
# Every call also takes an optional `method` naming it (Alipay's method names): a bank signature
# does not cover the path, and sessions and unbindings take the same fields, so a body that names
# its call is the one way a bank partner can keep it from being presented at the other endpoint.
SCHEMAS = {call: {**fields, "method": Field(str, required=False, choices=(METHODS[call],))}
           for call, fields in _FIELDS.items()}


class _Nonces:
    """Nonce checks fail closed: an outage refuses the call rather than admitting a replay."""

    def __init__(self, store):
        self.store = store

    def use_nonce(self, scope: str, nonce: str, ttl_seconds: int) -> bool:
        try:
            return self.store.use_nonce(scope, nonce, ttl_seconds)
        except StoreUnavailable:
            raise DomainError("service_unavailable", "Cannot check request freshness; try again",
                              headers={"Retry-After": "1"}) from None


def _signed(channel_id: str, call: str) -> dict:
    rt = runtime()
    session = rt.session()
    info = channel_registry.info(session, channel_id)
    path = request.full_path if request.query_string else request.path
    signed = signing.verify_call(info, call=call, method=request.method, path_and_query=path,
                                 headers=request.headers, body=request.get_data(cache=True),
                                 now=int(rt.clock.now()), nonces=_Nonces(rt.store))
    # Counted after the signature, so strangers cannot use up a partner's allowance.
    limits.enforce(rt, "channel", channel_id, rt.config.channel_rate_per_minute,
                   "Too many calls from this channel; slow down")
    return validate(signed.payload, SCHEMAS[call])


@bp.post("/<channel_id>/activations")
def activations(channel_id: str):
    p = _signed(channel_id, "activations")
    rt = runtime()
    return jsonify(activation.activate(rt.session(), rt, channel_id, p))


@bp.post("/<channel_id>/sessions")
def sessions(channel_id: str):
    p = _signed(channel_id, "sessions")
    rt = runtime()
    return jsonify(activation.open_session(rt.session(), rt, channel_id, p["channel_user_id"]))


@bp.post("/<channel_id>/reverifications")
def reverifications(channel_id: str):
    p = _signed(channel_id, "reverifications")
    rt = runtime()
    return jsonify(activation.reverify(rt.session(), rt, channel_id, p))


@bp.post("/<channel_id>/unbindings")
def unbindings(channel_id: str):
    p = _signed(channel_id, "unbindings")
    rt = runtime()
    session = rt.session()
    binding = activation.binding_for(session, channel_id, p["channel_user_id"])
    return jsonify(activation.unbind(session, rt, session.get(Voucher, binding.voucher_id), channel_id,
                                     by="channel", channel_user_id=binding.channel_user_id))
