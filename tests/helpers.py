"""A small world for API tests: the demo data set, mock channels and institutions, driven
through the Flask test client with real signatures and real tokens."""
from __future__ import annotations

import base64
import json
import os
import shutil

from app.demo import load_demo
from mock_channels.client import ChannelClient, flask_sender

_KEYS_CACHE: dict[str, str] = {}


def problem_code(resp) -> str:
    assert resp.mimetype == "application/problem+json", (resp.status_code, resp.get_data(as_text=True)[:300])
    return resp.get_json()["code"]


def redis_round_trips(monkeypatch) -> list:
    """Every write of commands to a Redis socket from now on: one per round trip (a pipeline
    sends all of its commands at once)."""
    import redis.connection

    sent = []
    real = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append(command)
        return real(self, command, check_health)
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


class World:
    def __init__(self, app, client, tmp_root):
        self.app, self.client = app, client
        self.rt = app.extensions["evoucher"]
        instance = self.rt.config.instance_path
        # Channel keys are slow to make (RSA-2048): make them once per test session, copy after.
        cache = _KEYS_CACHE.get("dir")
        if cache and not os.path.exists(os.path.join(instance, "channels")):
            shutil.copytree(cache, os.path.join(instance, "channels"))
        path = load_demo(app, "http://localhost")
        if not cache:
            keep = os.path.join(str(tmp_root), "channel-keys")
            if not os.path.exists(keep):
                shutil.copytree(os.path.join(instance, "channels"), keep)
            _KEYS_CACHE["dir"] = keep
        with open(path, encoding="utf-8") as fh:
            self.demo = json.load(fh)
        self._inst_tokens: dict[str, tuple[str, float]] = {}
        self.instance = instance

    # institutions
    def inst(self, code: str) -> dict:
        return next(i for i in self.demo["institutions"] if i["code"] == code)

    def inst_headers(self, code: str) -> dict:
        cached = self._inst_tokens.get(code)
        if cached is None or self.rt.clock.now() > cached[1]:
            i = self.inst(code)
            basic = base64.b64encode(f"{i['client_id']}:{i['client_secret']}".encode()).decode()
            resp = self.client.post("/v1/oauth/token", data={"grant_type": "client_credentials"},
                                    headers={"Authorization": f"Basic {basic}"})
            assert resp.status_code == 200, resp.get_json()
            body = resp.get_json()
            self._inst_tokens[code] = (body["access_token"], self.rt.clock.now() + body["expires_in"] - 60)
        return {"Authorization": f"Bearer {self._inst_tokens[code][0]}"}

    def scan(self, code: str, token: str, purpose: str = "registration"):
        return self.client.post("/v1/scans", json={"token": token, "purpose": purpose},
                                headers=self.inst_headers(code))

    # persons and channels
    def person(self, name: str) -> dict:
        return next(p for p in self.demo["persons"] if p["name"] == name)

    def enrol(self, name: str, birth: str, enrolments: list[tuple[str, str]]) -> dict:
        """Add a person of a test's own to the registry, insured since 2000 in each (region,
        insurance type) of `enrolments`; `person(name)` then finds them as it finds a demo person."""
        from app.demo import make_id_number
        from app.services import enrolment_import
        n = 900 + len(self.demo["persons"])
        person = {"person_no": f"TEST{n:06d}", "id_number": make_id_number("110105", birth, n, 1),
                  "name": name, "phone": f"1390000{n:04d}"}
        rows = [{**person, "id_type": "01", "region_code": region, "insurance_type": kind, "status": "active",
                 "since": "2000-01-01"} for region, kind in enrolments]
        with self.app.app_context():
            report = enrolment_import.import_text(self.rt.session(), self.rt,
                                                  "\n".join(json.dumps(r) for r in rows), "jsonl")
            assert not report.errors, [(e["line"], e["code"]) for e in report.errors]
        self.demo["persons"].append(person)
        return person

    def channel(self, channel_id: str = "wechat") -> ChannelClient:
        return ChannelClient(channel_id, "http://localhost", self.instance, send=flask_sender(self.client),
                             clock=self.rt.clock.now)

    def activate(self, name: str, channel: str = "wechat", pin: str | None = None) -> dict:
        p = self.person(name)
        return self.channel(channel).activate(p["id_number"], name, p["phone"], pin=pin)

    def holder(self, name: str, channel: str = "wechat", pin: str | None = "258013") -> dict:
        """Activate (if needed) and open a session; returns auth headers plus ids."""
        act = self.activate(name, channel, pin=pin)
        sess = self.channel(channel).session(act["channel_user_id"])
        return {"headers": {"Authorization": f"Bearer {sess['access_token']}"},
                "access_token": sess["access_token"],
                "voucher_id": act["voucher_id"], "channel_user_id": act["channel_user_id"]}

    def reinstate(self, holder: dict, channel: str = "wechat") -> dict:
        """Reinstate after a face check in the channel; the reinstatement ends every holder session
        opened before it, so the holder's headers move to a session opened after it."""
        out = self.channel(channel).reverify(holder["channel_user_id"], "reinstate")
        sess = self.channel(channel).session(holder["channel_user_id"])
        holder["headers"] = {"Authorization": f"Bearer {sess['access_token']}"}
        holder["access_token"] = sess["access_token"]
        return out

    def qr(self, holder: dict, **body) -> str:
        resp = self.client.post("/v1/me/qr-tokens", json=body, headers=holder["headers"])
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()["token"]


def http_institution_token(base: str, world: World, code: str = "H110000001") -> str:
    """An institution's Bearer token from a served app at `base` (client credentials over HTTP)."""
    import requests
    inst = world.inst(code)
    basic = base64.b64encode(f"{inst['client_id']}:{inst['client_secret']}".encode()).decode()
    resp = requests.post(base + "/v1/oauth/token", data={"grant_type": "client_credentials"},
                         headers={"Authorization": f"Basic {basic}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]
