"""A bank partner's signature covers the body's fields, not the call (SPEC §5): what keeps one
signed request to one call, and the bodies its signed string cannot carry (docs/channels.md)."""
from __future__ import annotations

import pytest

from mock_channels.client import ChannelError
from tests.helpers import problem_code

BANK = "bank-icbc"


def _signed(world, call: str, payload: dict):
    """A request signed as the bank partner's SDK signs it for `call` (the path is not signed)."""
    url = f"http://localhost/v1/channels/{BANK}/{call}"
    return world.channel(BANK).signer.sign(call, url, payload, now=world.rt.clock.now())


def _present(world, req, call: str):
    """The signed request's headers and body, sent to `call`'s endpoint."""
    return world.client.post(f"/v1/channels/{BANK}/{call}", data=req.body, headers=req.headers)


def _still_bound(world, holder: dict) -> None:
    """The binding stands: its session still works and the channel opens another."""
    assert world.client.get("/v1/me", headers=holder["headers"]).status_code == 200
    assert world.channel(BANK).session(holder["channel_user_id"])["voucher_id"] == holder["voucher_id"]


def test_a_signed_session_request_replayed_at_unbindings_is_refused(world):
    """Sessions and unbindings take the same body: the nonce, spent for the whole channel by the
    first call, is what keeps the session request from unbinding the user."""
    holder = world.holder("张丽", BANK)
    req = _signed(world, "sessions", {"channel_user_id": holder["channel_user_id"]})
    assert _present(world, req, "sessions").status_code == 200
    resp = _present(world, req, "unbindings")
    assert (resp.status_code, problem_code(resp)) == (401, "channel_request_replayed")
    _still_bound(world, holder)


def test_a_body_naming_its_call_cannot_serve_another_endpoint_first(world):
    """Intercepted before it reached /sessions and presented at /unbindings first, the nonce is
    still fresh: only a body that names its call is told apart. Its nonce is then spent."""
    holder = world.holder("张丽", BANK)
    body = {"channel_user_id": holder["channel_user_id"], "method": "evoucher.session.create"}
    assert _present(world, _signed(world, "sessions", body), "sessions").status_code == 200
    req = _signed(world, "sessions", body)
    resp = _present(world, req, "unbindings")
    assert (resp.status_code, problem_code(resp)) == (400, "invalid_request")
    assert resp.get_json()["field"] == "method"
    assert "evoucher.unbinding.create" in resp.get_json()["detail"]
    _still_bound(world, holder)
    resp = _present(world, req, "sessions")
    assert (resp.status_code, problem_code(resp)) == (401, "channel_request_replayed")


def test_a_body_of_another_shape_cannot_serve_another_endpoint_first(world):
    """Each endpoint refuses fields it does not define, so a re-verification's signed body
    presented first at /unbindings is refused even without a `method` field."""
    holder = world.holder("张丽", BANK)
    req = _signed(world, "reverifications", {"channel_user_id": holder["channel_user_id"],
                                             "face_verified": True, "purpose": "pin_reset"})
    resp = _present(world, req, "unbindings")
    assert (resp.status_code, problem_code(resp)) == (400, "invalid_request")
    assert resp.get_json()["field"] == "face_verified"
    _still_bound(world, holder)


@pytest.mark.parametrize("payload,field", [
    ({"channel_user_id": "icbc_1&face_verified=true"}, "channel_user_id"),
    ({"channel_user_id=icbc_1": "x"}, "channel_user_id=icbc_1"),
], ids=["ampersand-in-value", "equals-in-name"])
def test_a_bank_body_whose_signed_string_reads_as_other_fields_is_refused(world, payload, field):
    with pytest.raises(ChannelError) as exc:
        world.channel(BANK).call("sessions", payload)
    assert (exc.value.status, exc.value.code) == (400, "invalid_request")
    assert exc.value.problem["field"] == field
    assert "would sign exactly as a different one" in exc.value.problem["detail"]


def test_an_ampersand_is_refused_on_bank_channels_only(world):
    """WeChat signs the raw body and Alipay's value is one form field: `&` is only text there."""
    with pytest.raises(ChannelError) as exc:
        world.channel("wechat").session("wx_1&x=1")
    assert exc.value.code == "channel_not_bound"


def test_ordinary_values_pass_the_whole_bank_journey(world):
    """Chinese names (with the middle dot), digits, ids and `=` in a value, through the mock bank
    client, which names each call in its body."""
    person = world.enrol("买买提·艾力", "1985-05-05", [("110000", "employee")])
    bank = world.channel(BANK)
    act = bank.activate(person["id_number"], "买买提·艾力", person["phone"], pin="258013",
                        channel_user_id="icbc=0001+张")
    assert act["channel_user_id"] == "icbc=0001+张"
    session = bank.session(act["channel_user_id"])
    assert session["voucher_id"] == act["voucher_id"]
    assert bank.reverify(act["channel_user_id"], "pin_reset")["purpose"] == "pin_reset"
    assert bank.unbind(act["channel_user_id"])["status"] == "unbound"
    with pytest.raises(ChannelError) as exc:
        bank.session(act["channel_user_id"])
    assert exc.value.code == "channel_not_bound"
