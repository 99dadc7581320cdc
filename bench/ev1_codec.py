"""Verifying an ev1 token against its signature check alone, and the base45 codec.

Run by hand: `.venv/bin/python bench/ev1_codec.py [calls]`. The aim is verification near the
speed of the signature itself: `tokens.verify` (decode, key lookup, signature, times) against
the bare libsodium check of the same bytes. It also times crypto/ev1.py's base45 codec against
the `base45` package (a test dependency: `pip install -e '.[test]'`), which it replaced.
"""

import os
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crypto import ev1, keyring, tokens  # noqa: E402


def per_call_us(fn, calls: int) -> float:
    fn()
    return min(timeit.repeat(fn, number=calls, repeat=5)) / calls * 1e6


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    key = keyring.generate("Ed25519")
    ring = keyring.Keyring([key], key.kid)
    now = 1_767_225_600
    text = tokens.issue(key, voucher_id=tokens.new_voucher_id(), region="110000", iat=now, lifetime=60,
                        token_id=tokens.new_token_id(), fmt="ev1")
    tok = ev1.decode(text)
    raw = tok.signed + tok.signature
    rows = [("tokens.verify (whole check)", lambda: tokens.verify(text, ring, now)),
            ("Ed25519 signature check alone", lambda: key.verify(tok.signed, tok.signature)),
            ("ev1.decode", lambda: ev1.decode(text)),
            ("base45 decode, crypto/ev1.py", lambda: ev1.b45decode(text[4:])),
            ("base45 encode, crypto/ev1.py", lambda: ev1.b45encode(raw))]
    try:
        import base45
        rows += [("base45 decode, base45 package", lambda: base45.b45decode(text[4:])),
                 ("base45 encode, base45 package", lambda: base45.b45encode(raw))]
    except ImportError:
        print("(the base45 package is not installed: its rows are left out)")
    print(f"{len(text)}-character token, {calls} calls per timing, best of 5, pid {os.getpid()}")
    times = {name: per_call_us(fn, calls) for name, fn in rows}
    for name, us in times.items():
        print(f"{name:32s} {us:7.2f} µs")
    ratio = times["tokens.verify (whole check)"] / times["Ed25519 signature check alone"]
    print(f"whole check / signature alone: {ratio:.2f}")


if __name__ == "__main__":
    main()
