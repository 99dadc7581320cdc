"""Ed25519 and ES256 sign/verify on one core, libsodium (PyNaCl) against OpenSSL (pyca/cryptography).

Run by hand: `python bench/ed25519.py [seconds] [cpu]`. The service signs and verifies ev1
tokens with libsodium (crypto/keyring.py); this shows why, on this machine.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from bench.sm2_verify import rate  # noqa: E402
from crypto import keyring  # noqa: E402


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 6.0
    if hasattr(os, "sched_setaffinity"):
        cpu = int(sys.argv[2]) if len(sys.argv) > 2 else sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
        print(f"pinned to cpu {cpu}")
    msg = os.urandom(51)  # an ev1 payload with a guardian
    seed = os.urandom(32)
    ossl, sodium = ed25519.Ed25519PrivateKey.from_private_bytes(seed), SigningKey(seed)
    sig = ossl.sign(msg)
    assert sodium.sign(msg).signature == sig
    ossl_pub, sodium_pub = ossl.public_key(), sodium.verify_key
    p256 = ec.generate_private_key(ec.SECP256R1())
    es_sig = p256.sign(msg, ec.ECDSA(hashes.SHA256()))
    service = keyring.generate("Ed25519")
    service_sig = service.sign(msg)
    rows = [
        ("Ed25519 verify, OpenSSL", lambda: ossl_pub.verify(sig, msg)),
        ("Ed25519 verify, libsodium", lambda: sodium_pub.verify(msg, sig)),
        ("Ed25519 verify, crypto.keyring (the service)", lambda: service.verify(msg, service_sig)),
        ("Ed25519 sign, OpenSSL", lambda: ossl.sign(msg)),
        ("Ed25519 sign, libsodium", lambda: sodium.sign(msg)),
        ("ES256 verify, OpenSSL", lambda: p256.public_key().verify(es_sig, msg, ec.ECDSA(hashes.SHA256()))),
    ]
    print("| operation | per second | µs each |\n|---|---:|---:|")
    for name, fn in rows:
        r = rate(fn, seconds)
        print(f"| {name} | {r:,.0f} | {1e6 / r:.0f} |")


if __name__ == "__main__":
    main()
