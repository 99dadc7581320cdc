"""A mock channel's key material in the instance folder, generated once.

    <instance>/channels/<channel_id>/private.pem   mode 0600
    <instance>/channels/<channel_id>/public.pem    what `evoucher channels add --public-key` takes
    <instance>/channels/<channel_id>/serial        the key's serial (the service's default rule)

RSA-2048 for wechat and alipay, SM2 for bank-<code>.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.channels import channel_kind
from app.channels.keys import default_serial
from crypto import sm2


def default_instance_dir() -> Path:
    """EVOUCHER_INSTANCE, else ./instance, like the service itself."""
    return Path(os.environ.get("EVOUCHER_INSTANCE") or "instance")


def key_dir(instance_dir: str | os.PathLike, channel_id: str) -> Path:
    return Path(instance_dir) / "channels" / channel_id


def _new_keypair(kind: str) -> tuple[bytes, bytes]:
    if kind == "bank":
        priv, pub = sm2.generate_keypair()
        return sm2.private_key_to_pem(priv), sm2.public_key_to_pem(pub)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_keys(instance_dir: str | os.PathLike, channel_id: str) -> tuple[Path, Path, str]:
    """(private PEM path, public PEM path, serial) for a channel, generating them the first time."""
    kind = channel_kind(channel_id)
    if kind is None:
        raise ValueError(f"unknown channel {channel_id!r}: use wechat, alipay or bank-<code>")
    final = key_dir(instance_dir, channel_id)
    if not (final / "serial").exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        # Build the three files in a private folder, then move it into place in one rename,
        # so a concurrent first run never sees half a key set.
        staging = Path(tempfile.mkdtemp(prefix=f".{channel_id}-", dir=final.parent))
        try:
            private, public = _new_keypair(kind)
            _write(staging / "private.pem", private, 0o600)
            _write(staging / "public.pem", public, 0o644)
            _write(staging / "serial", default_serial(public).encode("ascii") + b"\n", 0o644)
            try:
                os.rename(staging, final)
            except OSError:
                if not (final / "serial").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    serial = (final / "serial").read_text("ascii").strip()
    return final / "private.pem", final / "public.pem", serial
