"""Bad input of every shape gets a 400 problem with its code, never a 500, on both backends:
text no field carries (NUL, other controls, lone surrogates) in bodies, paths and queries;
cursors beyond a database integer; JSON nested deeper than the parser goes."""
from __future__ import annotations

import base64

import pytest

from tests.helpers import problem_code

DEEP = "[" * 5000 + "]" * 5000  # 10 KB, under the 16 KiB body limit


def _bad(resp, field=None):
    assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
    assert problem_code(resp) == "invalid_request"
    if field:
        assert resp.get_json()["field"] == field


@pytest.mark.parametrize("text", ["ab\u0000c", "a\u001fb", "x\u007f", "\ud800abc", "\udfff"],
                         ids=["nul", "unit-separator", "del", "high-surrogate", "low-surrogate"])
def test_body_text_with_control_characters_or_surrogates(world, text):
    h = world.holder("王建国")
    # raw JSON with \u escapes, the way a client sends a lone surrogate
    escaped = "".join(f"\\u{ord(c):04x}" for c in text)
    resp = world.client.post("/v1/me/qr-tokens", data='{"voucher_id": "' + escaped + '"}',
                             content_type="application/json", headers=h["headers"])
    _bad(resp, "voucher_id")
    resp = world.client.post("/v1/me/family", data='{"id_number": "x", "name": "王小明", "relation": "parent",'
                             ' "document_ref": "' + escaped + '"}', content_type="application/json",
                             headers=h["headers"])
    _bad(resp)


def test_an_unknown_field_that_cannot_be_encoded_is_not_echoed(world):
    resp = world.client.post("/v1/scans", data='{"token": "x", "purpose": "registration", "\\ud800": 1}',
                             content_type="application/json", headers=world.inst_headers("H110000001"))
    _bad(resp)
    assert "field" not in resp.get_json()


@pytest.mark.parametrize("path", ["/v1/scans/scn_%00", "/v1/scans/scn_%1B"])
def test_control_characters_in_an_institution_path(world, path):
    _bad(world.client.get(path, headers=world.inst_headers("H110000001")))


@pytest.mark.parametrize("method,url", [
    ("delete", "/v1/me/remote-care-filings/fil_%00"),
    ("get", "/v1/me/records?voucher_id=v%00"),
    ("get", "/v1/me/records?cursor=1&%00=1"),
])
def test_control_characters_in_a_holder_path_or_query(world, method, url):
    h = world.holder("王建国")
    _bad(getattr(world.client, method)(url, headers=h["headers"]))


@pytest.mark.parametrize("value", ["9" * 25, str(2 ** 63), "-1", "1e3", "１２", " 1"])
def test_cursors_out_of_range_or_not_decimal(world, value):
    h = world.holder("王建国")
    _bad(world.client.get(f"/v1/me/records?cursor={value}", headers=h["headers"]), "cursor")
    _bad(world.client.get(f"/v1/revocations?since={value}", headers=world.inst_headers("H110000001")), "since")


def test_the_largest_cursor_is_an_empty_page(world):
    h = world.holder("王建国")
    resp = world.client.get(f"/v1/me/records?cursor={2 ** 63 - 1}", headers=h["headers"])
    assert resp.status_code == 200
    resp = world.client.get(f"/v1/revocations?since={2 ** 63 - 1}", headers=world.inst_headers("H110000001"))
    assert resp.status_code == 200 and resp.get_json()["items"] == []


def test_json_nested_too_deep(world):
    h = world.holder("王建国")
    _bad(world.client.post("/v1/me/qr-tokens", data='{"voucher_id":' + DEEP + '}',
                           content_type="application/json", headers=h["headers"]))
    _bad(world.client.post("/v1/scans", data=DEEP, content_type="application/json",
                           headers=world.inst_headers("H110000001")))
    resp = world.client.post("/v1/oauth/token", data=DEEP, content_type="application/json")
    assert resp.status_code == 400 and problem_code(resp) == "invalid_request"


def test_json_nested_too_deep_in_an_unsigned_channel_call(world):
    """The bank scheme reads the body before the signature: bad JSON is refused, not a 500."""
    resp = world.client.post("/v1/channels/bank-icbc/sessions", data=DEEP, content_type="application/json",
                             headers={"X-Bank-App-Id": "bank-icbc", "X-Bank-Timestamp": "1790000000",
                                      "X-Bank-Nonce": "n1", "X-Bank-Signature": "AAAA"})
    assert resp.status_code == 400 and problem_code(resp) == "invalid_request"


def test_oauth_with_a_json_array_or_control_characters_in_credentials(world):
    resp = world.client.post("/v1/oauth/token", json=["grant_type"])
    assert resp.status_code == 400 and problem_code(resp) == "invalid_request"
    basic = base64.b64encode(b"H110000001%00:secret").decode()
    resp = world.client.post("/v1/oauth/token", data={"grant_type": "client_credentials"},
                             headers={"Authorization": f"Basic {basic}"})
    assert resp.status_code == 401 and problem_code(resp) == "unauthorized"


@pytest.mark.parametrize("region", ["４１０７００", "٤١٠٧٠٠"], ids=["fullwidth", "arabic-indic"])
def test_digits_mean_ascii_digits(world, region):
    h = world.holder("王建国")
    resp = world.client.post("/v1/me/remote-care-filings", headers=h["headers"],
                             json={"care_region_code": region, "valid_from": "2026-09-01", "valid_until": "2026-12-01"})
    _bad(resp, "care_region_code")
