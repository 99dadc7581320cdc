"""Fixtures for channel signing: real RSA and SM2 keys, channel records, a nonce store."""
from __future__ import annotations

import hashlib
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, jsonify, request

from app.channels import ChannelInfo, channel_kind, verify_call
from app.errors import DomainError, register_error_handlers
from crypto import sm2
from mock_channels.keys import ensure_keys


class MemoryNonces:
    """The nonce half of the ephemeral-store interface, in memory (expiry is not under test)."""

    def __init__(self):
        self.seen: set[tuple[str, str]] = set()
        self.calls: list[tuple[str, str, int]] = []

    def use_nonce(self, scope: str, nonce: str, ttl_seconds: int) -> bool:
        self.calls.append((scope, nonce, ttl_seconds))
        if (scope, nonce) in self.seen:
            return False
        self.seen.add((scope, nonce))
        return True


class DownNonces:
    """A nonce store whose backing service is unreachable."""

    class Outage(Exception):
        pass

    def use_nonce(self, scope: str, nonce: str, ttl_seconds: int) -> bool:
        raise self.Outage("store down")


def _pems(key) -> tuple[bytes, bytes]:
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture(scope="session")
def rsa_keys():
    """Two RSA-2048 key pairs (current and other), as (key object, private PEM, public PEM)."""
    pairs = []
    for _ in range(2):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pairs.append((key, *_pems(key)))
    return pairs


@pytest.fixture(scope="session")
def sm2_keys():
    """Two SM2 key pairs as (private 32 bytes, public 64 bytes, private PEM, public PEM)."""
    pairs = []
    for _ in range(2):
        priv, pub = sm2.generate_keypair()
        pairs.append((priv, pub, sm2.private_key_to_pem(priv), sm2.public_key_to_pem(pub)))
    return pairs


@pytest.fixture
def nonces():
    return MemoryNonces()


@pytest.fixture
def down_nonces():
    return DownNonces()


CHANNELS = ("wechat", "alipay", "bank-icbc")


@pytest.fixture(scope="session")
def instance_dir(tmp_path_factory):
    """An instance folder whose mock channel keys are generated once per test session."""
    path = tmp_path_factory.mktemp("instance")
    for channel_id in CHANNELS:
        ensure_keys(path, channel_id)
    return path


def make_service(instance_dir, nonces):
    """A stand-in for the service's channel endpoint: the real verifier behind a Flask route,
    answering like §4.3 does, so the mocks can be driven without the rest of the service."""
    registry = {}
    for channel_id in CHANNELS:
        _, public, serial = ensure_keys(instance_dir, channel_id)
        registry[channel_id] = ChannelInfo(id=channel_id, app_id=channel_id, kind=channel_kind(channel_id),
                                           keys={serial: public.read_bytes()})
    service = Flask("fake_service")
    register_error_handlers(service)
    service.calls = []

    @service.post("/v1/channels/<channel>/<call>")
    def channel_call(channel, call):
        signed = verify_call(registry.get(channel), call=call, method=request.method,
                             path_and_query=request.full_path, headers=request.headers,
                             body=request.get_data(), now=int(time.time()), nonces=nonces)
        body = signed.payload
        service.calls.append((channel, call, body))
        voucher_id = "v" + hashlib.sha256(body["channel_user_id"].encode()).hexdigest()[:20]
        if call == "activations":
            if body["name"].startswith("未参保"):
                raise DomainError("person_not_enrolled")
            if not body["face_verified"]:
                raise DomainError("face_verification_required")
            return jsonify(voucher_id=voucher_id, status="active"), 201
        if call == "sessions":
            if body["channel_user_id"].endswith("unknown"):
                raise DomainError("channel_not_bound")
            return jsonify(access_token=f"tok.{body['channel_user_id']}", expires_in=900, voucher_id=voucher_id)
        return jsonify(voucher_id=voucher_id, call=call, echo=body)

    return service


@pytest.fixture
def service(instance_dir, nonces):
    return make_service(instance_dir, nonces)
