"""Error model, request ids, body limits, health, readiness, metrics, OpenAPI and OAuth."""
from __future__ import annotations

import base64
import io
import re

import pytest

from tests.helpers import problem_code


def test_every_response_has_a_request_id(client):
    assert client.get("/healthz").headers["X-Request-Id"]
    resp = client.get("/nope")
    assert resp.headers["X-Request-Id"]
    assert resp.status_code == 404 and problem_code(resp) == "not_found"


def test_caller_request_id_is_echoed_only_when_plain(client):
    assert client.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"] == "abc-123"
    odd = client.get("/healthz", headers={"X-Request-Id": "<script>"}).headers["X-Request-Id"]
    assert odd != "<script>" and len(odd) == 16
    # logged as it is, so one that carries a phone number is replaced too (codes and ids are fine)
    phone = client.get("/healthz", headers={"X-Request-Id": "u13800001111"}).headers["X-Request-Id"]
    assert phone != "u13800001111" and len(phone) == 16
    assert client.get("/healthz", headers={"X-Request-Id": "7f3a-01.b_2"}).headers["X-Request-Id"] == "7f3a-01.b_2"


def test_malformed_json_is_a_400_problem(world):
    resp = world.client.post("/v1/scans", data=b"{not json", content_type="application/json",
                             headers=world.inst_headers("H110000001"))
    assert resp.status_code == 400 and problem_code(resp) == "invalid_request"


@pytest.mark.parametrize("payload,field", [
    ({"token": 5, "purpose": "registration"}, "token"),
    ({"token": "EV1:X", "purpose": "shopping"}, "purpose"),
    ({"token": "EV1:X", "purpose": "registration", "extra": 1}, "extra"),
    ({"purpose": "registration"}, "token"),
    (["not", "an", "object"], None),
])
def test_wrong_types_unknown_and_missing_fields(world, payload, field):
    resp = world.client.post("/v1/scans", json=payload, headers=world.inst_headers("H110000001"))
    assert resp.status_code == 400 and problem_code(resp) == "invalid_request"
    if field:
        assert resp.get_json()["field"] == field


def test_body_over_16_kib_is_413(world):
    resp = world.client.post("/v1/scans", data=b"{" + b" " * (17 * 1024) + b"}", content_type="application/json",
                             headers=world.inst_headers("H110000001"))
    assert resp.status_code == 413 and problem_code(resp) == "payload_too_large"


class _CountingInput(io.BytesIO):
    """A WSGI input that records the size of every read asked of it."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.asked: list = []

    def read(self, size=-1):
        self.asked.append(size)
        return super().read(size)

    def readinto(self, buffer):
        self.asked.append(("into", len(buffer)))
        return super().readinto(buffer)


MALFORMED_SCAN = b'{"token": "EV1:X", "purpose": "registration"}'


def test_a_body_with_a_content_length_is_read_in_one_call_of_that_length(world):
    stream = _CountingInput(MALFORMED_SCAN)
    resp = world.client.post("/v1/scans", data=MALFORMED_SCAN, content_type="application/json",
                             headers=world.inst_headers("H110000001"), environ_overrides={"wsgi.input": stream})
    assert resp.status_code == 400 and problem_code(resp) == "token_malformed"  # the body was parsed
    assert stream.asked == [len(MALFORMED_SCAN)]


def test_a_body_without_a_length_takes_werkzeugs_limited_path(world):
    """A body the server terminates itself (chunked: no Content-Length) is read to its end
    and still held to the 16 KiB limit."""
    def post(body: bytes):
        return world.client.post("/v1/scans", data=body, content_type="application/json",
                                 headers=world.inst_headers("H110000001"),
                                 environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True,
                                                    "wsgi.input": io.BytesIO(body)})
    resp = post(MALFORMED_SCAN)
    assert resp.status_code == 400 and problem_code(resp) == "token_malformed"
    resp = post(b"{" + b" " * (17 * 1024) + b"}")
    assert resp.status_code == 413 and problem_code(resp) == "payload_too_large"


class _BrokenInput(io.BytesIO):
    def read(self, size=-1):
        raise OSError("client went away")


def test_a_body_cut_off_by_the_client_is_a_400(world):
    resp = world.client.post("/v1/scans", data=MALFORMED_SCAN, content_type="application/json",
                             headers=world.inst_headers("H110000001"),
                             environ_overrides={"wsgi.input": _BrokenInput()})
    assert resp.status_code == 400 and problem_code(resp) == "invalid_request"


@pytest.mark.parametrize("content_type,code", [
    ("application/json; charset=utf-8", "token_malformed"),
    ("application/problem+json", "token_malformed"),  # any JSON media type, as Flask's is_json
    ("text/plain", "invalid_request"),
    ("application/x-www-form-urlencoded", "invalid_request"),
])
def test_json_media_types(world, content_type, code):
    resp = world.client.post("/v1/scans", data=MALFORMED_SCAN, content_type=content_type,
                             headers=world.inst_headers("H110000001"))
    assert resp.status_code == 400 and problem_code(resp) == code


def test_wrong_method_is_a_problem(client):
    resp = client.delete("/healthz")
    assert resp.status_code == 405 and problem_code(resp) == "method_not_allowed"


def test_health_and_readiness(client, backend):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready"
    assert ready["checks"]["token_store_kind"] == ("redis" if backend == "pg-redis" else "sql")


def test_readiness_reports_a_dead_token_store(make_config, clock):
    from app import create_app
    cfg = make_config(redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    app = create_app(cfg, clock=clock)
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["token_store"] == "unavailable"


def test_metrics_exposition(client):
    client.get("/healthz")
    text = client.get("/metrics").get_data(as_text=True)
    assert "evoucher_http_requests_total" in text
    assert "evoucher_http_request_duration_seconds_bucket" in text
    assert "evoucher_scans_total" in text or "evoucher_tokens_issued_total" in text or "# HELP" in text


def _sample(client, name: str, **labels) -> float:
    """One sample's value from GET /metrics (0 when the series is not there yet)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + "{") and line.split("} ", 1)[0] == f"{name}{{{want}":
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_scans_by_result_tokens_issued_and_activations_by_channel_and_result(world):
    """SPEC §4.4: /metrics carries scans by result, tokens issued, activations by channel and result."""
    from mock_channels.client import ChannelError
    series = {"ok": ("evoucher_scans_total", {"result": "ok"}),
              "used": ("evoucher_scans_total", {"result": "token_already_used"}),
              "ev1": ("evoucher_tokens_issued_total", {"format": "ev1"}),
              "jwt": ("evoucher_tokens_issued_total", {"format": "jwt"}),
              "act_ok": ("evoucher_activations_total", {"channel": "alipay", "result": "ok"}),
              "act_refused": ("evoucher_activations_total", {"channel": "alipay", "result": "person_not_enrolled"})}

    def samples() -> dict:
        return {k: _sample(world.client, name, **labels) for k, (name, labels) in series.items()}

    before = samples()
    holder = world.holder("张丽", "alipay")
    token = world.qr(holder)
    world.qr(holder, format="jwt")
    assert world.scan("H110000001", token).status_code == 200
    assert problem_code(world.scan("H110000001", token)) == "token_already_used"
    p = world.person("罗敏")  # her only enrolment is suspended
    with pytest.raises(ChannelError):
        world.channel("alipay").activate(p["id_number"], "罗敏", p["phone"])
    after = samples()
    assert {k: after[k] - before[k] for k in before} == {
        "ok": 1, "used": 1, "ev1": 1, "jwt": 1, "act_ok": 1, "act_refused": 1}


def test_metrics_method_label_is_bounded(client):
    """gunicorn admits any method of 3-20 capitals and digits; each must not become a new series."""
    for i in range(5):
        assert client.open("/healthz", method=f"XBOGUS{i}").status_code == 405
    assert client.open("/v1/scans", method="XBOGUSPOST").status_code == 405
    text = client.get("/metrics").get_data(as_text=True)
    assert "XBOGUS" not in text
    assert 'evoucher_http_requests_total{endpoint="unmatched",method="OTHER",status="405"}' in text
    assert 'method="GET"' in text


def test_openapi_lists_every_route(app, client):
    """The document and app.url_map agree both ways, path and method. The page assets
    (/static/web/…) are files for /m/ and /scanner/, not API operations."""
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "web.static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        served |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served - documented == set(), "served but missing from /openapi.json"
    assert documented - served == set(), "in /openapi.json but not served"
    codes = set(doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"])
    assert {"token_already_used", "remote_care_filing_required", "payload_too_large"} <= codes
    for path, operations in doc["paths"].items():  # bad text in any URL is a 400 (docs/decisions.md)
        for method, operation in operations.items():
            assert "invalid_request" in operation["responses"]["400"]["description"], (method, path)


def test_openapi_documents_the_bearer_every_protected_route_needs(app, client):
    """A route behind institution_required / holder_required says so, and documents its 401."""
    from app.api.auth import HOLDER_AUD, INSTITUTION_AUD
    scheme = {INSTITUTION_AUD: "institutionToken", HOLDER_AUD: "holderToken"}
    doc = client.get("/openapi.json").get_json()
    checked = 0
    for rule in app.url_map.iter_rules():
        audience = getattr(app.view_functions[rule.endpoint], "bearer_audience", None)
        if audience is None:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            op = doc["paths"][path][method.lower()]
            assert op.get("security") == [{scheme[audience]: []}], f"{method} {path}: security"
            assert "unauthorized" in op["responses"]["401"]["description"], f"{method} {path}: 401"
            checked += 1
    assert checked >= 20


def _basic(cid, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()}


def test_openapi_names_every_member_of_a_scan_and_of_a_feed_page(world):
    """A scanner vendor generates its client from the document: a member the service sends and
    the document leaves out is dropped by such a client."""
    doc = world.client.get("/openapi.json").get_json()
    holder = world.holder("张丽")
    scan = world.scan("H110000001", world.qr(holder)).get_json()
    schema = doc["components"]["schemas"]["Scan"]
    assert set(schema["properties"]) == set(scan)
    for member in ("person", "insurance"):
        assert set(schema["properties"][member]["properties"]) == set(scan[member])
    assert world.client.post("/v1/me/loss-report", headers=holder["headers"]).status_code == 200
    page = world.client.get("/v1/revocations", headers=world.inst_headers("H110000001")).get_json()
    assert page["items"]
    ref = doc["paths"]["/v1/revocations"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    feed = doc["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]
    assert set(feed["properties"]) == set(page)
    assert set(feed["properties"]["items"]["items"]["properties"]) == set(page["items"][0])


def test_oauth_client_credentials(world):
    inst = world.inst("H110000001")
    resp = world.client.post("/v1/oauth/token", data={"grant_type": "client_credentials"},
                             headers=_basic(inst["client_id"], inst["client_secret"]))
    body = resp.get_json()
    assert resp.status_code == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert body["access_token"].count(".") == 2
    assert body["scan_purposes"] == ["registration", "outpatient_settlement", "inpatient_settlement", "pharmacy",
                                     "query", "emergency"]


def test_the_token_answer_names_the_purposes_the_institution_may_scan_for(world):
    """The desk page offers a pharmacy only what it may scan for (docs/decisions.md, "Scan
    purposes by institution kind"); the answer is the institution's own, for its own secret."""
    inst = world.inst("P110000001")
    resp = world.client.post("/v1/oauth/token", data={"grant_type": "client_credentials"},
                             headers=_basic(inst["client_id"], inst["client_secret"]))
    assert resp.status_code == 200 and resp.get_json()["scan_purposes"] == ["pharmacy", "query"]
    schema = world.client.get("/openapi.json").get_json()["paths"]["/v1/oauth/token"]["post"]["responses"]["200"]
    assert set(schema["content"]["application/json"]["schema"]["properties"]) == set(resp.get_json())


def test_oauth_wrong_secret_and_unknown_client(world):
    inst = world.inst("H110000001")
    for cid, secret in ((inst["client_id"], "wrong"), ("inst_nobody", inst["client_secret"])):
        resp = world.client.post("/v1/oauth/token", data={"grant_type": "client_credentials"},
                                 headers=_basic(cid, secret))
        assert resp.status_code == 401 and problem_code(resp) == "unauthorized"
    resp = world.client.post("/v1/oauth/token", data={"grant_type": "client_credentials"})
    assert problem_code(resp) == "unauthorized"


def test_oauth_wrong_grant_type(world):
    inst = world.inst("H110000001")
    resp = world.client.post("/v1/oauth/token", data={"grant_type": "password"},
                             headers=_basic(inst["client_id"], inst["client_secret"]))
    assert resp.status_code == 400 and problem_code(resp) == "invalid_request"
    assert resp.get_json()["error"] == "unsupported_grant_type"


def test_inactive_institution_cannot_get_a_token(world):
    from app.services import institutions
    inst = world.inst("H320682001")
    with world.app.app_context():
        s = world.rt.session()
        institutions.by_code(s, "H320682001").status = "inactive"
        s.commit()
    resp = world.client.post("/v1/oauth/token", data={"grant_type": "client_credentials"},
                             headers=_basic(inst["client_id"], inst["client_secret"]))
    assert resp.status_code == 403 and problem_code(resp) == "institution_inactive"


def test_oauth_refusals_carry_the_rfc6749_error_member(world):
    """An OAuth client library reads a token refusal from `error` (RFC 6749 §5.2); without it a
    wrong secret is reported as a missing access token instead of an invalid client."""
    from app.services import institutions
    inst = world.inst("H110000001")
    good = _basic(inst["client_id"], inst["client_secret"])
    cases = [
        ({"grant_type": "client_credentials"}, _basic(inst["client_id"], "wrong"), 401, "unauthorized",
         "invalid_client"),
        ({"grant_type": "client_credentials"}, _basic("inst_nobody", inst["client_secret"]), 401, "unauthorized",
         "invalid_client"),
        ({"grant_type": "client_credentials"}, {}, 401, "unauthorized", "invalid_client"),
        ({}, good, 400, "invalid_request", "invalid_request"),
        ({"grant_type": "password"}, good, 400, "invalid_request", "unsupported_grant_type"),
    ]
    for form, headers, status, code, error in cases:
        resp = world.client.post("/v1/oauth/token", data=form, headers=headers)
        assert (resp.status_code, problem_code(resp), resp.get_json().get("error")) == (status, code, error), form
    with world.app.app_context():
        s = world.rt.session()
        institutions.by_code(s, "H110000001").status = "inactive"
        s.commit()
    resp = world.client.post("/v1/oauth/token", data={"grant_type": "client_credentials"}, headers=good)
    assert (resp.status_code, problem_code(resp), resp.get_json().get("error")) == (
        403, "institution_inactive", "unauthorized_client")


def test_bearer_required_and_holder_token_is_not_an_institution_token(world):
    resp = world.client.post("/v1/scans", json={"token": "x", "purpose": "query"})
    assert resp.status_code == 401 and problem_code(resp) == "unauthorized"
    holder = world.holder("张丽")
    resp = world.client.post("/v1/scans", json={"token": "x", "purpose": "query"}, headers=holder["headers"])
    assert problem_code(resp) == "unauthorized"
    resp = world.client.get("/v1/me", headers=world.inst_headers("H110000001"))
    assert problem_code(resp) == "unauthorized"


def test_unexpected_errors_are_opaque_500_problems(app):
    @app.get("/boom-for-test")
    def boom():
        raise RuntimeError("secret internals 110105199003071234")

    resp = app.test_client().get("/boom-for-test")
    assert resp.status_code == 500 and problem_code(resp) == "internal_error"
    assert "secret internals" not in resp.get_data(as_text=True)
    assert "Traceback" not in resp.get_data(as_text=True)


def test_database_outage_is_503_service_unavailable(make_config, clock, tmp_path):
    from app import create_app
    cfg = make_config(database_url=f"sqlite:///{tmp_path}/missing-dir/never.db")
    app = create_app(cfg, clock=clock)
    resp = app.test_client().get("/.well-known/jwks.json")
    assert resp.status_code == 503 and problem_code(resp) == "service_unavailable"
    assert app.test_client().get("/readyz").status_code == 503
    assert app.test_client().get("/healthz").get_json() == {"status": "ok"}  # the process is up (SPEC §4.4)


def test_a_remembered_access_token_expires_when_a_fresh_check_would_refuse_it(world):
    headers = world.inst_headers("H110000001")
    assert world.client.get("/v1/revocations", headers=headers).status_code == 200  # verified and remembered
    world.rt.clock.advance(world.rt.config.institution_token_ttl - 1)
    assert world.client.get("/v1/revocations", headers=headers).status_code == 200
    world.rt.clock.advance(1)  # now == exp: refused, remembered or not
    resp = world.client.get("/v1/revocations", headers=headers)
    assert resp.status_code == 401 and problem_code(resp) == "unauthorized"
    world.rt.caches.clear()
    assert problem_code(world.client.get("/v1/revocations", headers=headers)) == "unauthorized"
