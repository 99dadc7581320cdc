"""Web-page fixtures: the pages do not depend on the storage backend, so run them on SQLite only."""
from __future__ import annotations

import base64

import pytest


@pytest.fixture
def backend():
    return "sqlite-sqlstore"


@pytest.fixture
def inst_headers(app, client):
    """Bearer headers for a freshly registered, active hospital."""
    from app.services import institutions
    with app.app_context():
        session = app.extensions["evoucher"].session()
        inst, secret = institutions.add(session, code="H110000099", name="测试医院", kind="hospital",
                                        region_code="110000")
        client_id = inst.client_id
        session.commit()
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    resp = client.post("/v1/oauth/token", data={"grant_type": "client_credentials"},
                       headers={"Authorization": f"Basic {basic}"})
    assert resp.status_code == 200, resp.get_json()
    return {"Authorization": "Bearer " + resp.get_json()["access_token"]}
