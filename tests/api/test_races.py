"""Parallel requests against one invariant, on both backends: each step that reads, checks and
writes holds under concurrency. Requests run in threads through the app (one session each);
where the race needs a wider window than a fast test machine gives, a read the service already
does is slowed down, never skipped."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from app.services import family as family_service
from app.services import regions as regions_service
from app.store.models import Reverification, UsageRecord, Voucher
from mock_channels.client import ChannelError
from tests.helpers import problem_code


def _parallel(calls):
    barrier = threading.Barrier(len(calls))
    out = [None] * len(calls)

    def run(i, call):
        barrier.wait()
        try:
            out[i] = call()
        except Exception as exc:  # a channel client raises for a problem answer
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _slowed(monkeypatch, module, name, delay=0.2):
    original = getattr(module, name)

    def slow(*args, **kwargs):
        result = original(*args, **kwargs)
        time.sleep(delay)
        return result
    monkeypatch.setattr(module, name, slow)


def test_parallel_wrong_pins_cannot_outrun_the_lock(world, monkeypatch):
    h = world.holder("王建国", pin="258013")
    checked = []
    hasher_check = world.rt.pins.check

    def counting_check(stored, pin):
        checked.append(pin)
        time.sleep(0.05)  # parallel tries overlap while the hash is checked
        return hasher_check(stored, pin)
    monkeypatch.setattr(world.rt.pins, "check", counting_check)
    client = world.app.test_client
    answers = _parallel([lambda i=i: client().put("/v1/me/pin-free-limit", json={"amount_fen": 1, "pin": f"90000{i}"},
                                                  headers=h["headers"]) for i in range(8)])
    codes = sorted(problem_code(r) for r in answers)
    assert len(checked) <= 5, codes  # never more than five hashes checked before the lock
    assert "pin_locked" in codes and set(codes) <= {"pin_invalid", "pin_locked"}
    # locked for everyone, the right PIN included
    resp = world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 1, "pin": "258013"}, headers=h["headers"])
    assert problem_code(resp) == "pin_locked"
    assert world.client.get("/v1/me", headers=h["headers"]).get_json()["pin"]["locked_until"]


def test_a_guardian_cannot_pass_the_family_limit_in_parallel(world, monkeypatch):
    g = world.holder("吴强")

    def link(name):
        p = world.person(name)
        return lambda: world.app.test_client().post(
            "/v1/me/family", json={"id_number": p["id_number"], "name": name, "relation": "other"},
            headers=g["headers"])
    for name in ("李秀英", "陈静", "杨帆", "黄磊"):
        assert link(name)().status_code == 201
    world.rt.clock.advance(60)  # past the per-minute limit on link requests
    _slowed(monkeypatch, family_service, "links_of")
    answers = _parallel([link("周芳"), link("郭峰"), link("林娜")])
    assert sorted(r.status_code for r in answers) == [201, 409, 409]
    assert {problem_code(r) for r in answers if r.status_code == 409} == {"family_limit_reached"}
    items = world.client.get("/v1/me/family", headers=g["headers"]).get_json()["items"]
    assert len([i for i in items if i["role"] == "guardian" and i["status"] in ("active", "pending")]) == 5


def test_one_member_is_invited_once_in_parallel(world, monkeypatch):
    g = world.holder("吴强")
    p = world.person("周芳")
    _slowed(monkeypatch, family_service, "links_of")
    answers = _parallel([lambda: world.app.test_client().post(
        "/v1/me/family", json={"id_number": p["id_number"], "name": "周芳", "relation": "other"},
        headers=g["headers"])] * 2)
    assert sorted(r.status_code for r in answers) == [201, 409]
    assert problem_code(next(r for r in answers if r.status_code == 409)) == "family_link_exists"


def test_overlapping_filings_filed_in_parallel_leave_one_active(world, monkeypatch):
    g = world.holder("王建国")
    _slowed(monkeypatch, regions_service.records, "record")  # between reading the filings and the commit
    body = {"care_region_code": "410700", "valid_from": "2026-09-01", "valid_until": "2026-12-01"}
    answers = _parallel([lambda: world.app.test_client().post("/v1/me/remote-care-filings", json=body,
                                                               headers=g["headers"])] * 2)
    assert [r.status_code for r in answers] == [201, 201]
    items = world.client.get("/v1/me/remote-care-filings", headers=g["headers"]).get_json()["items"]
    assert len([i for i in items if i["status"] == "active"]) == 1


def test_one_reverification_is_used_once_in_parallel(world, monkeypatch):
    h = world.holder("张丽", pin="258013")
    world.channel("wechat").reverify(h["channel_user_id"], "pin_reset")
    original = world.rt.pins.hash

    def slow_hash(pin):  # both resets have found the unused re-verification by now
        time.sleep(0.2)
        return original(pin)
    monkeypatch.setattr(world.rt.pins, "hash", slow_hash)
    answers = _parallel([lambda pin=pin: world.app.test_client().put("/v1/me/pin", json={"new_pin": pin},
                                                                     headers=h["headers"])
                         for pin in ("470136", "581247")])
    assert sorted(r.status_code for r in answers) == [200, 403]
    assert problem_code(next(r for r in answers if r.status_code == 403)) == "pin_required"
    with world.rt.engine.connect() as conn:
        used = conn.execute(select(Reverification.used_at).join(Voucher, Voucher.id == Reverification.voucher_id)
                            .where(Voucher.voucher_id == h["voucher_id"])).scalars().all()
    assert len(used) == 1 and used[0] is not None


def test_first_activations_of_one_person_in_two_channels_at_once(world):
    p = world.person("孙浩")
    answers = _parallel([lambda c=c: world.channel(c).activate(p["id_number"], "孙浩", p["phone"])
                         for c in ("wechat", "alipay")])
    assert not any(isinstance(a, ChannelError) for a in answers), answers
    assert len({a["voucher_id"] for a in answers}) == 1
    assert sorted(a["created"] for a in answers) == [False, True]


def test_tries_counted_by_workers_that_died_lock_the_pin_instead_of_blocking_it(world):
    """Five tries counted and never resolved (their workers died mid-check) count as five misses."""
    from sqlalchemy import update
    h = world.holder("王建国", pin="258013")
    with world.rt.engine.begin() as conn:
        conn.execute(update(Voucher).where(Voucher.voucher_id == h["voucher_id"]).values(pin_failures=5))
    resp = world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 1, "pin": "258013"}, headers=h["headers"])
    assert resp.status_code == 423 and problem_code(resp) == "pin_locked" and resp.get_json()["locked_until"]
    world.rt.clock.advance(24 * 3600 + 1)  # and the lock lapses like any other
    h = world.holder("王建国", pin=None)  # a new session: the old one has expired
    resp = world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 1, "pin": "258013"}, headers=h["headers"])
    assert resp.status_code == 200


def test_a_right_pin_checked_while_a_parallel_miss_locks_it_is_refused(world, monkeypatch):
    """The lock set by another request during this try's hash check wins over this right PIN."""
    import datetime as dt

    from sqlalchemy import update
    h = world.holder("王建国", pin="258013")
    until = dt.datetime.fromtimestamp(world.rt.clock.now() + 24 * 3600, dt.timezone.utc)
    original = world.rt.pins.check

    def check_while_locked_elsewhere(stored, pin):
        with world.rt.engine.begin() as other:  # the parallel fifth miss, committed meanwhile
            other.execute(update(Voucher).where(Voucher.voucher_id == h["voucher_id"])
                          .values(pin_failures=0, pin_locked_until=until))
        return original(stored, pin)
    monkeypatch.setattr(world.rt.pins, "check", check_while_locked_elsewhere)
    resp = world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 1, "pin": "258013"}, headers=h["headers"])
    assert resp.status_code == 423 and problem_code(resp) == "pin_locked" and resp.get_json()["locked_until"]
    monkeypatch.setattr(world.rt.pins, "check", original)
    resp = world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 1, "pin": "258013"}, headers=h["headers"])
    assert problem_code(resp) == "pin_locked"  # and the lock stands


def test_a_scan_racing_a_loss_report_is_refused_or_recorded_before_it(world, monkeypatch):
    """A scan that loads the voucher while a loss report is being written (its record appended,
    not yet committed) must not be accepted after the report commits: it waits for the report
    and is refused, and its refusal comes after the report in the voucher's records."""
    from app.services import loss as loss_service
    from app.store.models import UsageRecord
    h = world.holder("张丽")
    token = world.qr(h)
    world.inst_headers("H110000001")  # the scan thread needs no token request of its own
    original = loss_service.records.record
    writing = threading.Event()

    def slow_record(session, voucher, kind, **kw):
        original(session, voucher, kind, **kw)
        if kind == "loss_report":
            writing.set()
            time.sleep(0.3)  # the report's transaction stays open while the scan runs
    monkeypatch.setattr(loss_service.records, "record", slow_record)

    def scan():
        assert writing.wait(5)
        return world.app.test_client().post("/v1/scans", json={"token": token, "purpose": "registration"},
                                            headers=world.inst_headers("H110000001"))
    report, answer = _parallel([lambda: world.app.test_client().post("/v1/me/loss-report", json={},
                                                                     headers=h["headers"]), scan])
    assert report.status_code == 200, report.get_json()
    assert answer.status_code == 403 and problem_code(answer) == "voucher_suspended"
    with world.rt.engine.connect() as conn:
        kinds = conn.execute(select(UsageRecord.kind, UsageRecord.detail).join(Voucher)
                             .where(Voucher.voucher_id == h["voucher_id"]).order_by(UsageRecord.id)).all()
    assert [(k, d.get("result")) for k, d in kinds][-2:] == [("loss_report", None), ("scan", "voucher_suspended")]


def test_a_code_issued_while_a_loss_report_commits_stays_dead_after_reinstatement(world, monkeypatch):
    """Issuance reads the voucher, then signs: a loss report that commits in between (and a
    second boundary crossed) gives a code dated after the suspension. It is refused while the
    voucher is suspended, and still refused once it is reinstated; the holder's fresh code works."""
    import datetime as dt

    from app.services import activation, keys
    from crypto import tokens
    h = world.holder("张丽")
    world.inst_headers("H110000001")
    original = activation.holder_snapshot
    reported = []

    def snapshot_then_report(conn, claims):
        holder = original(conn, claims)
        if not reported:  # the report commits after this read and before the code is signed
            report = threading.Thread(target=lambda: reported.append(world.app.test_client().post(
                "/v1/me/loss-report", json={}, headers=h["headers"])))
            report.start()
            report.join()
            world.rt.clock.advance(1)
        return holder
    monkeypatch.setattr(activation, "holder_snapshot", snapshot_then_report)
    resp = world.client.post("/v1/me/qr-tokens", json={}, headers=h["headers"])
    assert reported[0].status_code == 200 and resp.status_code == 201
    monkeypatch.setattr(activation, "holder_snapshot", original)
    raced = resp.get_json()["token"]
    with world.app.app_context():
        claims = tokens.verify(raced, keys.keyring(world.rt), int(world.rt.clock.now()))
    feed = world.client.get("/v1/revocations", headers=world.inst_headers("H110000001")).get_json()
    suspended = [i for i in feed["items"] if i["kind"] == "voucher" and i["id"] == h["voucher_id"]]
    assert claims.iat > dt.datetime.fromisoformat(suspended[-1]["at"]).timestamp()  # dated after the report
    assert problem_code(world.scan("H110000001", raced)) == "voucher_suspended"
    world.rt.clock.advance(5)
    world.reinstate(h)
    assert problem_code(world.scan("H110000001", raced)) == "token_revoked"
    assert world.scan("H110000001", world.qr(h)).status_code == 200


def _guardian_with_member_code(world):
    g = world.holder("王建国")
    link = world.client.post("/v1/me/family", headers=g["headers"], json={
        "id_number": world.person("王小明")["id_number"], "name": "王小明", "relation": "parent",
        "document_ref": "出生证 1"}).get_json()
    token = world.qr(g, voucher_id=link["member"]["voucher_id"])
    world.inst_headers("H110000001")  # the scan needs no token request while the other call runs
    return g, link, token


def _scan_with_a_call_between_its_checks_and_its_write(world, monkeypatch, token, call):
    """The scan checks the code (the guardian's voucher and link included), then `call` runs to
    its end in another thread, then the scan writes: as when that call commits in between."""
    from app.services import scans
    original, done = scans._body, []

    def body_after_call(*args, **kwargs):
        if not done:
            t = threading.Thread(target=lambda: done.append(call(world.app.test_client())))
            t.start()
            t.join()
        return original(*args, **kwargs)
    monkeypatch.setattr(scans, "_body", body_after_call)
    answer = world.app.test_client().post("/v1/scans", json={"token": token, "purpose": "registration"},
                                          headers=world.inst_headers("H110000001"))
    return done[0], answer


def test_a_guardians_code_in_flight_when_the_guardians_loss_report_commits_is_refused(world, monkeypatch):
    """The guardian's voucher is checked again by the scan row's insert, as the member's own is:
    a report that commits after the scan's checks and before its write refuses the scan."""
    g, link, token = _guardian_with_member_code(world)
    report, answer = _scan_with_a_call_between_its_checks_and_its_write(
        world, monkeypatch, token, lambda c: c.post("/v1/me/loss-report", json={}, headers=g["headers"]))
    assert report.status_code == 200, report.get_json()
    assert answer.status_code == 401 and problem_code(answer) == "token_revoked"
    assert "guardian" in answer.get_json()["detail"]
    _assert_refused_and_recorded(world, link)


def test_a_guardians_code_in_flight_when_the_link_ends_is_refused(world, monkeypatch):
    """Likewise the link: ended after the scan's checks and before its write, the scan is refused
    and no scan row is written."""
    g, link, token = _guardian_with_member_code(world)
    ended, answer = _scan_with_a_call_between_its_checks_and_its_write(
        world, monkeypatch, token, lambda c: c.delete(f"/v1/me/family/{link['link_id']}", headers=g["headers"]))
    assert ended.status_code == 200, ended.get_json()
    assert answer.status_code == 401 and problem_code(answer) == "token_revoked"
    assert "family link" in answer.get_json()["detail"]
    _assert_refused_and_recorded(world, link)


def _assert_refused_and_recorded(world, link):
    """No scan row; the member's last record is the refused scan."""
    from app.store.models import Scan, UsageRecord
    with world.rt.engine.connect() as conn:
        assert conn.execute(select(Scan.id)).all() == []
        last = conn.execute(select(UsageRecord.kind, UsageRecord.detail).join(Voucher)
                            .where(Voucher.voucher_id == link["member"]["voucher_id"])
                            .order_by(UsageRecord.id.desc())).first()
    assert last.kind == "scan" and last.detail["result"] == "token_revoked"


def test_a_guardians_code_issued_while_the_link_ends_stays_dead_when_the_link_is_made_again(world, monkeypatch):
    """Issuance reads the link, then signs and notes the code under it: an end that commits in
    between lists the guardian's codes before this one is noted, so the feed never lists it. A
    link made again at once (the same second, which codes cannot tell apart) must not revive it:
    the service knows each guardian code by the link it was issued under."""
    from app.services import family
    g, link, _ = _guardian_with_member_code(world)
    member_vid = link["member"]["voucher_id"]
    original, ended = family.linked_member, []

    def read_then_end(*args, **kwargs):
        member = original(*args, **kwargs)
        if not ended:  # the end commits after this read and before the code is signed and noted
            t = threading.Thread(target=lambda: ended.append(world.app.test_client().delete(
                f"/v1/me/family/{link['link_id']}", headers=g["headers"])))
            t.start()
            t.join()
        return member
    monkeypatch.setattr(family, "linked_member", read_then_end)
    raced = world.client.post("/v1/me/qr-tokens", json={"voucher_id": member_vid}, headers=g["headers"])
    monkeypatch.setattr(family, "linked_member", original)
    assert ended[0].status_code == 200 and raced.status_code == 201, raced.get_json()
    feed = world.client.get("/v1/revocations", headers=world.inst_headers("H110000001")).get_json()["items"]
    assert raced.get_json()["token_id"] not in {i["id"] for i in feed}  # the end could not list it
    again = world.client.post("/v1/me/family", headers=g["headers"], json={
        "id_number": world.person("王小明")["id_number"], "name": "王小明", "relation": "parent",
        "document_ref": "出生证 1"})
    assert again.status_code == 201  # the same second on the service's clock
    refused = world.scan("H110000001", raced.get_json()["token"])
    assert refused.status_code == 401 and problem_code(refused) == "token_revoked"
    assert "family link" in refused.get_json()["detail"]
    fresh = world.scan("H110000001", world.qr(g, voucher_id=member_vid))
    assert fresh.status_code == 200 and fresh.get_json()["presented_by"]["relation"] == "parent"


def _pending_invitation_accepting(world):
    """王建国 invites the adult 李秀英, who has passed the channel's face check to accept."""
    g, m = world.holder("王建国"), world.holder("李秀英")
    link = world.client.post("/v1/me/family", headers=g["headers"], json={
        "id_number": world.person("李秀英")["id_number"], "name": "李秀英", "relation": "child"}).get_json()
    assert link["status"] == "pending"
    world.channel("wechat").reverify(m["channel_user_id"], "family_accept", link_id=link["link_id"])
    return g, m, link


def _with_a_call_after_finding_the_link(world, monkeypatch, holder, call):
    """`holder`'s link request finds the link, then `call` runs to its end in another thread,
    then the request goes on: as when that call commits in between."""
    original, done = family_service._find, []

    def find_then_call(session, rt, voucher, link_id):
        link = original(session, rt, voucher, link_id)
        if not done and voucher.voucher_id == holder["voucher_id"]:
            t = threading.Thread(target=lambda: done.append(call(world.app.test_client())))
            t.start()
            t.join()
        return link
    monkeypatch.setattr(family_service, "_find", find_then_call)
    return done


def test_an_invitation_withdrawn_while_the_member_accepts_stays_ended(world, monkeypatch):
    """The guardian withdraws the invitation after the member's accept found it pending: the
    accept must not bring the ended link back to life."""
    g, m, link = _pending_invitation_accepting(world)
    ended = _with_a_call_after_finding_the_link(
        world, monkeypatch, m, lambda c: c.delete(f"/v1/me/family/{link['link_id']}", headers=g["headers"]))
    accepted = world.client.post(f"/v1/me/family/{link['link_id']}/accept", json={}, headers=m["headers"])
    assert ended[0].status_code == 200, ended[0].get_json()
    assert accepted.status_code == 404 and problem_code(accepted) == "family_link_not_found"
    items = world.client.get("/v1/me/family", headers=g["headers"]).get_json()["items"]
    assert [i["status"] for i in items if i["link_id"] == link["link_id"]] == ["ended"]
    shown = world.client.post("/v1/me/qr-tokens", json={"voucher_id": m["voucher_id"]}, headers=g["headers"])
    assert shown.status_code == 403 and problem_code(shown) == "forbidden"


def test_a_link_ended_by_both_sides_at_once_ends_once(world, monkeypatch):
    """The member ends the link after the guardian's end found it live: one end, one record each."""
    g, m, link = _pending_invitation_accepting(world)
    assert world.client.post(f"/v1/me/family/{link['link_id']}/accept", json={},
                             headers=m["headers"]).status_code == 200
    by_member = _with_a_call_after_finding_the_link(
        world, monkeypatch, g, lambda c: c.delete(f"/v1/me/family/{link['link_id']}", headers=m["headers"]))
    by_guardian = world.client.delete(f"/v1/me/family/{link['link_id']}", headers=g["headers"])
    assert by_member[0].status_code == 200, by_member[0].get_json()
    assert by_guardian.status_code == 404 and problem_code(by_guardian) == "family_link_not_found"
    for h in (g, m):
        kinds = [r["kind"] for r in world.client.get("/v1/me/records", headers=h["headers"]).get_json()["items"]]
        assert kinds.count("family_end") == 1, kinds
    items = world.client.get("/v1/me/family", headers=g["headers"]).get_json()["items"]
    assert [i["status"] for i in items if i["link_id"] == link["link_id"]] == ["ended"]


def test_a_channel_user_unbound_twice_at_once_is_unbound_once(world, monkeypatch):
    """Two unbindings of one channel user that both found the binding live: one unbinds, the
    other answers channel_not_bound, and the voucher's record shows one unbind."""
    from app.services import activation
    h = world.holder("张丽")
    _slowed(monkeypatch, activation, "binding_for")
    answers = _parallel([lambda: world.channel("wechat").unbind(h["channel_user_id"]) for _ in range(2)])
    done = [a for a in answers if isinstance(a, dict)]
    refused = [a for a in answers if isinstance(a, ChannelError)]
    assert len(done) == 1 and done[0]["status"] == "unbound", answers
    assert len(refused) == 1 and refused[0].problem["code"] == "channel_not_bound", answers
    with world.rt.engine.connect() as conn:
        kinds = conn.execute(select(UsageRecord.kind).join(Voucher)
                             .where(Voucher.voucher_id == h["voucher_id"])).scalars().all()
    assert kinds.count("unbind") == 1, kinds


def test_a_loss_report_that_found_the_voucher_active_leaves_a_cancellation_standing(world, monkeypatch):
    """A cancellation (terminal) commits after the loss report read the voucher: the report must
    not turn it back into a suspension, which a reinstatement could then make active again."""
    from app.services import activation, loss, vouchers
    h = world.holder("张丽")
    original, cancelled = activation.holder_from_claims, []

    def read_then_cancel(session, claims):
        voucher = original(session, claims)
        if not cancelled:
            def cancel():
                with world.app.app_context():
                    s = world.rt.session()
                    cancelled.append(loss.cancel(s, world.rt, vouchers.by_public_id(s, h["voucher_id"]),
                                                 by="operator"))
            t = threading.Thread(target=cancel)
            t.start()
            t.join()
        return voucher
    monkeypatch.setattr(activation, "holder_from_claims", read_then_cancel)
    report = world.client.post("/v1/me/loss-report", json={}, headers=h["headers"])
    monkeypatch.setattr(activation, "holder_from_claims", original)
    assert cancelled[0]["status"] == "cancelled"
    assert report.status_code == 403 and problem_code(report) == "voucher_cancelled"
    with world.rt.engine.connect() as conn:
        assert conn.execute(select(Voucher.status).where(Voucher.voucher_id == h["voucher_id"])).scalar() \
            == "cancelled"
    with pytest.raises(ChannelError) as refused:
        world.channel("wechat").reverify(h["channel_user_id"], "reinstate")
    assert refused.value.code == "voucher_cancelled"


def _cancel(world, voucher_id: str) -> dict:
    """What `evoucher vouchers cancel` does."""
    from app.services import loss, vouchers
    with world.app.app_context():
        session = world.rt.session()
        return loss.cancel(session, world.rt, vouchers.by_public_id(session, voucher_id), by="operator")


def _change_racing(world, monkeypatch, headers, request, stop):
    """Send `request` (method, path, body) with `headers`; `stop` (a loss report or a
    cancellation) runs to its end in another thread after the request has read the voucher
    (the session's lookup, which every holder request starts with) and before it writes.
    Returns (what `stop` returned, the answer)."""
    from app.services import activation
    original, stopped = activation.holder_from_claims, []

    def read_then_stop(session, claims):
        voucher = original(session, claims)
        if not stopped:
            stopped.append(None)  # the report's own request reads through here too
            t = threading.Thread(target=lambda: stopped.append(stop()))
            t.start()
            t.join()
        return voucher
    monkeypatch.setattr(activation, "holder_from_claims", read_then_stop)
    method, path, body = request
    try:
        answer = getattr(world.app.test_client(), method)(path, json=body, headers=headers)
    finally:
        monkeypatch.setattr(activation, "holder_from_claims", original)
    return stopped[1], answer


# Every holder request that changes the voucher or what hangs on it, with a body that succeeds on
# the voucher `_holder_with_changes_to_make` prepares.
HOLDER_CHANGES = {
    "region_switch": lambda c: ("put", "/v1/me/active-region", {"region_code": c["other_region"]}),
    "filing_create": lambda c: ("post", "/v1/me/remote-care-filings", {
        "care_region_code": "320600", "valid_from": c["today"], "valid_until": c["today"]}),
    "filing_cancel": lambda c: ("delete", f"/v1/me/remote-care-filings/{c['filing_id']}", None),
    "family_link": lambda c: ("post", "/v1/me/family", {
        "id_number": c["minor_id_number"], "name": "高翔", "relation": "guardian", "document_ref": "户口簿 1"}),
    "family_accept": lambda c: ("post", f"/v1/me/family/{c['invitation_id']}/accept", {}),
    "family_end": lambda c: ("delete", f"/v1/me/family/{c['link_id']}", None),
    "pin_free_limit": lambda c: ("put", "/v1/me/pin-free-limit", {"amount_fen": 5000, "pin": "258013"}),
    "phone": lambda c: ("put", "/v1/me/phone", {"phone": "13700001111", "pin": "258013"}),
    "pin_change": lambda c: ("put", "/v1/me/pin", {"old_pin": "258013", "new_pin": "470136"}),
    "pin_reset": lambda c: ("put", "/v1/me/pin", {"new_pin": "470136"}),
}


def _holder_with_changes_to_make(world):
    """刘洋 (insured in Xinxiang and Beijing) with a filing, a minor linked, 王建国's invitation
    pending, and face checks in the holder's own channel for accepting it and for a PIN reset."""
    import datetime as dt
    h = world.holder("刘洋", pin="258013")
    today = dt.datetime.fromtimestamp(world.rt.clock.now(), dt.timezone(dt.timedelta(hours=8))).date().isoformat()
    filing = world.client.post("/v1/me/remote-care-filings", headers=h["headers"], json={
        "care_region_code": "320600", "valid_from": today, "valid_until": today}).get_json()
    link = world.client.post("/v1/me/family", headers=h["headers"], json={
        "id_number": world.person("王小明")["id_number"], "name": "王小明", "relation": "parent",
        "document_ref": "出生证 1"}).get_json()
    invitation = world.client.post("/v1/me/family", headers=world.holder("王建国")["headers"], json={
        "id_number": world.person("刘洋")["id_number"], "name": "刘洋", "relation": "child"}).get_json()
    assert invitation["status"] == "pending"
    world.channel("wechat").reverify(h["channel_user_id"], "family_accept", link_id=invitation["link_id"])
    world.channel("wechat").reverify(h["channel_user_id"], "pin_reset")
    region = world.client.get("/v1/me", headers=h["headers"]).get_json()["active_region"]
    return h, {"today": today, "filing_id": filing["filing_id"], "link_id": link["link_id"],
               "invitation_id": invitation["link_id"], "minor_id_number": world.person("高翔")["id_number"],
               "other_region": "410700" if region == "110000" else "110000"}


def _holder_state(world, h) -> tuple:
    """What any of HOLDER_CHANGES would change (the voucher's status aside), the face checks
    left to use included, and the newest record's kind."""
    from app.store.models import Reverification
    me = world.client.get("/v1/me", headers=h["headers"]).get_json()
    me.pop("status")
    filings = world.client.get("/v1/me/remote-care-filings", headers=h["headers"]).get_json()["items"]
    with world.rt.engine.connect() as conn:
        pin_hash = conn.execute(select(Voucher.pin_hash).where(Voucher.voucher_id == h["voucher_id"])).scalar()
        unused = conn.execute(select(Reverification.purpose).join(Voucher, Voucher.id == Reverification.voucher_id)
                              .where(Voucher.voucher_id == h["voucher_id"], Reverification.used_at.is_(None))
                              .order_by(Reverification.purpose)).scalars().all()
    newest = world.client.get("/v1/me/records", headers=h["headers"]).get_json()["items"][0]["kind"]
    return me, filings, pin_hash, unused, newest


@pytest.mark.parametrize("change", sorted(HOLDER_CHANGES))
def test_a_holder_change_that_found_the_voucher_usable_commits_nothing_after_a_loss_report_or_cancellation(
        world, monkeypatch, change):
    """Each holder change checks the voucher up front, then works (a PIN try, a lookup) and
    writes. A loss report, then a cancellation, commits in between: the change must not commit
    after it. It is refused with the voucher's state code and leaves everything as it was,
    the face check it would have used included, and nothing is recorded after the report."""
    h, ctx = _holder_with_changes_to_make(world)
    request = HOLDER_CHANGES[change](ctx)
    before = _holder_state(world, h)
    report, answer = _change_racing(world, monkeypatch, h["headers"], request, lambda: world.app.test_client().post(
        "/v1/me/loss-report", json={}, headers=h["headers"]))
    assert report.status_code == 200, report.get_json()
    assert answer.status_code == 403 and problem_code(answer) == "voucher_suspended", answer.get_json()
    assert _holder_state(world, h) == (*before[:-1], "loss_report")
    world.rt.clock.advance(5)
    world.reinstate(h)
    cancelled, answer = _change_racing(world, monkeypatch, h["headers"], request,
                                       lambda: _cancel(world, h["voucher_id"]))
    assert cancelled["status"] == "cancelled"
    assert answer.status_code == 403 and problem_code(answer) == "voucher_cancelled", answer.get_json()
    assert _holder_state(world, h) == (*before[:-1], "cancellation")


def test_a_holder_unbinding_goes_on_after_a_loss_report_but_not_after_a_cancellation(world, monkeypatch):
    """Unbinding only takes access away: a session of a voucher reported lost may still do it,
    also one that read the voucher before the report committed. A cancelled voucher changes
    nothing: an unbinding that read it before the cancellation committed is refused, and once
    it is cancelled the unbinding is refused before the PIN is tried."""
    h = world.holder("张丽", pin="258013")
    for channel in ("alipay", "bank-icbc"):
        world.holder("张丽", channel)
    report, answer = _change_racing(world, monkeypatch, h["headers"],
                                    ("delete", "/v1/me/channels/alipay", {"pin": "258013"}),
                                    lambda: world.app.test_client().post("/v1/me/loss-report", json={},
                                                                         headers=h["headers"]))
    assert report.status_code == 200 and answer.status_code == 200, answer.get_json()
    cancelled, answer = _change_racing(world, monkeypatch, h["headers"],
                                       ("delete", "/v1/me/channels/bank-icbc", {"pin": "258013"}),
                                       lambda: _cancel(world, h["voucher_id"]))
    assert cancelled["status"] == "cancelled"
    assert answer.status_code == 403 and problem_code(answer) == "voucher_cancelled", answer.get_json()
    assert world.client.get("/v1/me", headers=h["headers"]).get_json()["channels"] == ["bank-icbc", "wechat"]
    wrong = world.client.delete("/v1/me/channels/bank-icbc", json={"pin": "000111"}, headers=h["headers"])
    assert wrong.status_code == 403 and problem_code(wrong) == "voucher_cancelled"
    responses = world.client.get("/openapi.json").get_json()["paths"]["/v1/me/channels/{channel_id}"]["delete"]
    assert "voucher_cancelled" in responses["responses"]["403"]["description"].removeprefix("codes: ").split(", ")
