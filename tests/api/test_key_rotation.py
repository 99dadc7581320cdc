"""Signing-key rotation (SPEC §3, §7): a new key is published before it signs, so that a scanner
verifying offline from a cached JWKS knows it before the first code it signed; `at_once` (the
CLI's `--now`) signs with it at once. Old keys verify until every token they signed has expired."""
from __future__ import annotations

import datetime as dt

import pytest

from app.services import keys
from crypto import ev1, jws


def _rotate(world, **kwargs):
    with world.app.app_context():
        session = world.rt.session()
        row = keys.rotate(session, world.rt, **kwargs)
        session.commit()
        return row.kid, keys.aware(row.signs_from).timestamp()


def _jwks_kids(world) -> set[str]:
    resp = world.client.get("/.well-known/jwks.json")
    assert resp.headers["Cache-Control"] == f"public, max-age={keys.JWKS_MAX_AGE}"
    return {k["kid"] for k in resp.get_json()["keys"]}


def _signers(world, holder) -> dict[str, str]:
    """The kid of a fresh code in each format, a fresh institution token and a fresh holder token."""
    basic = world.inst("H110000001")
    inst = world.client.post("/v1/oauth/token", data={"grant_type": "client_credentials"},
                             auth=(basic["client_id"], basic["client_secret"])).get_json()["access_token"]
    session = world.channel().session(holder["channel_user_id"])["access_token"]
    holder["headers"] = {"Authorization": f"Bearer {session}"}  # a holder session lasts 15 minutes
    return {"ev1": ev1.decode(world.qr(holder)).kid, "jwt": jws.header(world.qr(holder, format="jwt"))["kid"],
            "institution": jws.header(inst)["kid"], "holder": jws.header(session)["kid"]}


def _advance_to(world, moment: float) -> None:
    world.rt.clock.advance(moment - world.rt.clock.now())


def test_a_rotated_key_is_published_at_once_and_signs_after_the_lead_time(world):
    holder = world.holder("张丽")
    (old,) = _jwks_kids(world)
    new, signs_from = _rotate(world)
    assert signs_from == world.rt.clock.now() + world.rt.config.key_lead_time == world.rt.clock.now() + 900
    assert _jwks_kids(world) == {old, new}  # in the JWKS before it signs anything
    assert set(_signers(world, holder).values()) == {old}

    _advance_to(world, signs_from - 1)
    assert new in _jwks_kids(world) and set(_signers(world, holder).values()) == {old}
    last_old_code = world.qr(holder)
    old_inst_headers = world.inst_headers("H110000001")

    _advance_to(world, signs_from)  # on the dot, though the keyring was loaded a second ago
    assert set(_signers(world, holder).values()) == {new}
    assert ev1.decode(last_old_code).kid == old
    resp = world.client.post("/v1/scans", json={"token": last_old_code, "purpose": "registration"},
                             headers=old_inst_headers)
    assert resp.status_code == 200, resp.get_json()  # the old key's code and access token still verify

    # The old key is published from when it stopped signing until every token it signed has
    # expired (the 900 s access tokens, plus a minute), not from the rotation.
    _advance_to(world, signs_from + 898)  # issued at signs_from - 1 for 900 s
    world.rt.caches.clear()  # verify the access token afresh, not from the worker's memory
    assert world.client.get("/v1/revocations", headers=old_inst_headers).status_code == 200
    _advance_to(world, signs_from + 960)
    assert _jwks_kids(world) == {old, new}
    _advance_to(world, signs_from + 961)
    assert _jwks_kids(world) == {new}


def test_rotate_at_once_signs_with_the_new_key_at_once(world):
    """`evoucher keys rotate --now`, for a compromised key: the codes issued before still verify."""
    holder = world.holder("张丽")
    (old,) = _jwks_kids(world)
    before = world.qr(holder)
    new, signs_from = _rotate(world, at_once=True)
    assert signs_from == world.rt.clock.now()
    assert set(_signers(world, holder).values()) == {new} and _jwks_kids(world) == {old, new}
    assert world.scan("H110000001", before).status_code == 200


def test_a_second_rotation_while_a_key_waits_is_refused_and_at_once_replaces_it(world):
    holder = world.holder("张丽")
    (old,) = _jwks_kids(world)
    waiting, signs_from = _rotate(world)
    world.rt.clock.advance(60)
    when = dt.datetime.fromtimestamp(signs_from, dt.timezone.utc).isoformat().replace("+00:00", "Z")
    with pytest.raises(keys.PendingKey, match=f"key {waiting} is already published and signs from {when}"):
        _rotate(world)
    assert _jwks_kids(world) == {old, waiting}

    emergency, now = _rotate(world, at_once=True)
    assert now == world.rt.clock.now()
    assert set(_signers(world, holder).values()) == {emergency}
    _advance_to(world, signs_from + 1)  # the withdrawn key never signs
    assert set(_signers(world, holder).values()) == {emergency}
    assert _jwks_kids(world) == {old, waiting, emergency}
    _advance_to(world, now + 961)
    assert _jwks_kids(world) == {emergency}
    assert set(_signers(world, holder).values()) == {emergency}



def test_parallel_rotations_publish_one_key(world, monkeypatch):
    """Two operators rotating at once: one key waits to sign, the other rotation is refused."""
    import threading
    import time

    from crypto import keyring
    generate = keyring.generate

    def slow(alg):
        time.sleep(0.3)  # both rotations have read the keys before either writes
        return generate(alg)
    monkeypatch.setattr(keyring, "generate", slow)
    (old,) = _jwks_kids(world)
    barrier, out = threading.Barrier(2), []

    def rotate():
        barrier.wait()
        try:
            out.append(_rotate(world)[0])
        except keys.PendingKey as exc:
            out.append(exc)
    threads = [threading.Thread(target=rotate) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kids = [o for o in out if isinstance(o, str)]
    assert len(kids) == 1 and [type(o) for o in out if o not in kids] == [keys.PendingKey], out
    world.rt.clock.advance(keys.CACHE_SECONDS + 1)
    assert _jwks_kids(world) == {old, *kids}


def test_a_worker_whose_clock_is_behind_the_first_key_still_signs(world):
    """The first key signs from when `db upgrade` made it, by that host's clock: a worker a few
    seconds behind it signs with it rather than with none."""
    (first,) = _jwks_kids(world)
    world.rt.clock.advance(-3)
    world.rt.keyring_cache.clear()
    with world.app.app_context():
        assert keys.keyring(world.rt).current.kid == first
