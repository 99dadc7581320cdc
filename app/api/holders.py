"""Holder API (Bearer holder token): QR codes, regions, family, filings, PIN, loss report, records."""
from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from ..extensions import runtime
from ..services import activation, family, loss, pins, qr, records, regions, vouchers
from .auth import holder_required
from .schema import OPTIONAL_PIN, PIN, Field, body, cursor

bp = Blueprint("holders", __name__, url_prefix="/v1/me")

REGION = Field(str, pattern=r"\d{6}", max_len=6)
DATE = Field(str, pattern=r"\d{4}-\d{2}-\d{2}", max_len=10)
QR_BODY = {"voucher_id": Field(str, required=False, max_len=32),
           "format": Field(str, required=False, choices=("ev1", "jwt")),
           "image": Field(str, required=False, choices=("svg", "png"))}


def _me():
    rt = runtime()
    session = rt.session()
    return rt, session, activation.holder_from_claims(session, g.auth)


def _me_to_change():
    """As _me, for a request that changes the voucher or what hangs on it. A suspended voucher
    (reported lost) changes nothing until it is reinstated: the session asking may be the lost
    phone's. It still shows its state and its own records, and may report the loss and unbind a channel,
    which only take access away (docs/decisions.md, "Loss report"). Refused here before any
    work (a PIN try is not counted); the service checks again under the voucher's row lock
    (`vouchers.hold_usable`) as it writes."""
    rt, session, voucher = _me()
    vouchers.require_usable(voucher)
    return rt, session, voucher


@bp.get("")
@holder_required
def me():
    rt, session, voucher = _me()
    return jsonify(vouchers.holder_view(session, rt, voucher))


@bp.post("/qr-tokens")
@holder_required
def qr_tokens():
    data = body(QR_BODY)
    rt = runtime()
    out = qr.issue(rt, g.auth, voucher_id=data.get("voucher_id"), fmt=data.get("format"),
                   image=data.get("image"))
    return jsonify(out), 201


@bp.put("/active-region")
@holder_required
def active_region():
    data = body({"region_code": REGION})
    rt, session, voucher = _me_to_change()
    return jsonify(regions.switch(session, rt, voucher, data["region_code"]))


@bp.get("/family")
@holder_required
def family_list():
    rt, session, voucher = _me()
    return jsonify(items=family.links_view(session, rt, voucher))


@bp.post("/family")
@holder_required
def family_create():
    data = body({"id_number": Field(str, max_len=32), "name": Field(str, max_len=64),
                 "relation": Field(str, choices=family.RELATIONS),
                 "document_ref": Field(str, required=False, max_len=128)})
    rt, session, voucher = _me_to_change()
    return jsonify(family.create(session, rt, voucher, data)), 201


@bp.post("/family/<link_id>/accept")
@holder_required
def family_accept(link_id: str):
    body({})
    rt, session, voucher = _me_to_change()
    return jsonify(family.accept(session, rt, voucher, link_id, binding_id=g.auth["bid"]))


@bp.delete("/family/<link_id>")
@holder_required
def family_end(link_id: str):
    rt, session, voucher = _me_to_change()
    return jsonify(family.end(session, rt, voucher, link_id))


@bp.get("/remote-care-filings")
@holder_required
def filings_list():
    rt, session, voucher = _me()
    return jsonify(items=regions.filings(session, voucher))


@bp.post("/remote-care-filings")
@holder_required
def filings_create():
    data = body({"care_region_code": REGION, "valid_from": DATE, "valid_until": DATE})
    rt, session, voucher = _me_to_change()
    return jsonify(regions.file(session, rt, voucher, data)), 201


@bp.delete("/remote-care-filings/<filing_id>")
@holder_required
def filings_cancel(filing_id: str):
    rt, session, voucher = _me_to_change()
    return jsonify(regions.cancel(session, rt, voucher, filing_id))


@bp.put("/pin")
@holder_required
def pin():
    data = body({"old_pin": OPTIONAL_PIN, "new_pin": PIN})
    rt, session, voucher = _me_to_change()
    return jsonify(pins.change(session, rt, voucher, data.get("old_pin"), data["new_pin"],
                               binding_id=g.auth["bid"]))


@bp.put("/pin-free-limit")
@holder_required
def pin_free_limit():
    data = body({"amount_fen": Field(int, min=0, max=pins.MAX_FREE_LIMIT_FEN), "pin": PIN})
    rt, session, voucher = _me_to_change()
    return jsonify(pins.set_free_limit(session, rt, voucher, data["amount_fen"], data["pin"]))


@bp.post("/loss-report")
@holder_required
def loss_report():
    body({})
    rt, session, voucher = _me()
    return jsonify(loss.report_lost(session, rt, voucher))


@bp.put("/phone")
@holder_required
def phone():
    data = body({"phone": Field(str, pattern=r"1\d{10}", max_len=11), "pin": PIN})
    rt, session, voucher = _me_to_change()
    return jsonify(pins.change_phone(session, rt, voucher, data["phone"], data["pin"]))


@bp.delete("/channels/<channel_id>")
@holder_required
def unbind(channel_id: str):
    data = body({"pin": PIN})
    rt, session, voucher = _me()
    return jsonify(pins.unbind_channel(session, rt, voucher, channel_id, data["pin"]))


@bp.get("/records")
@holder_required
def my_records():
    rt, session, voucher = _me()
    target = voucher
    member_id = request.args.get("voucher_id")
    if member_id and member_id != voucher.voucher_id:
        vouchers.require_usable(voucher)  # a lost guardian phone does not show the family's records
        target, _link = family.linked_member(session, voucher, member_id,
                                             "You may read only your own and your linked members' records")
    rows, nxt = records.page(session, target, cursor(request.args.get("cursor"), "cursor"))
    return jsonify(items=[records.as_json(r) for r in rows], next_cursor=str(nxt) if nxt else None)
