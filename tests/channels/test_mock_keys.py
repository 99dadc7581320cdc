"""Mock channel key files: generated once in the instance folder, private key mode 0600."""
from __future__ import annotations

import os
import stat

import pytest

from app.channels.keys import default_serial, load_public_key
from crypto import sm2
from mock_channels.keys import default_instance_dir, ensure_keys


@pytest.mark.parametrize("channel_id,kind", [("wechat", "wechat"), ("bank-cmb", "bank")])
def test_keys_created_once_with_private_mode_0600(tmp_path, channel_id, kind):
    private, public, serial = ensure_keys(tmp_path, channel_id)
    assert private == tmp_path / "channels" / channel_id / "private.pem"
    assert public == tmp_path / "channels" / channel_id / "public.pem"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(private.parent).st_mode) == 0o700
    assert serial == default_serial(public.read_bytes())
    assert (private.parent / "serial").read_text().strip() == serial
    load_public_key(public.read_bytes(), kind)  # registrable as it is
    first = private.read_bytes()
    assert ensure_keys(tmp_path, channel_id) == (private, public, serial)
    assert private.read_bytes() == first


def test_bank_keys_are_sm2_and_match(tmp_path):
    private, public, _ = ensure_keys(tmp_path, "bank-icbc")
    priv = sm2.private_key_from_pem(private.read_bytes())
    pub = sm2.public_key_from_pem(public.read_bytes())
    assert sm2.verify_der(pub, b"m", sm2.sign_der(priv, b"m"))


def test_alipay_keys_are_rsa_2048(tmp_path):
    from cryptography.hazmat.primitives import serialization

    private, _, _ = ensure_keys(tmp_path, "alipay")
    assert serialization.load_pem_private_key(private.read_bytes(), None).key_size == 2048


def test_channels_get_their_own_keys(tmp_path):
    assert ensure_keys(tmp_path, "bank-icbc")[2] != ensure_keys(tmp_path, "bank-cmb")[2]


def test_unknown_channel_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown channel"):
        ensure_keys(tmp_path, "unionpay")
    assert not (tmp_path / "channels" / "unionpay").exists()


def test_default_instance_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("EVOUCHER_INSTANCE", str(tmp_path))
    assert default_instance_dir() == tmp_path
    monkeypatch.delenv("EVOUCHER_INSTANCE")
    assert str(default_instance_dir()) == "instance"
