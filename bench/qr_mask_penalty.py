#!/usr/bin/env python3
"""How much a fixed QR data mask costs in the standard's penalty score, on real-shaped tokens.

Run by hand: .venv/bin/python bench/qr_mask_penalty.py [--tokens 300]

The service encodes with one fixed mask (app/services/qr.py DATA_MASK) instead of scoring all
eight per code, which is most of the encoder's time. This script encodes random ev1-sized
payloads (base45 of random bytes, what a signed token looks like) under each of the eight
masks, scores each symbol with the four penalty rules of ISO/IEC 18004 §7.8.3 (N1 runs of
five or more, N2 2×2 blocks, N3 finder-like 1:1:3:1:1 patterns, N4 dark/light balance) and
prints, per mask, how far its score lies above the best of the eight: median, p95 and max.
"""
from __future__ import annotations

import argparse
import re
import secrets
import statistics

import base45
import zxingcpp

FINDER = re.compile(r"(?=(10111010000|00001011101))")


def modules(text: str, mask: int) -> list[str]:
    code = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M", data_mask=mask)
    view = memoryview(code.to_image(scale=1, add_quiet_zones=False))
    h, w = view.shape
    raw = view.tobytes()
    return ["".join("1" if raw[y * w + x] == 0 else "0" for x in range(w)) for y in range(h)]


def penalty(rows: list[str]) -> int:
    n = len(rows)
    cols = ["".join(r[i] for r in rows) for i in range(n)]
    score = 0
    for line in rows + cols:
        for run in re.finditer(r"0{5,}|1{5,}", line):
            score += 3 + len(run.group()) - 5
        score += 40 * len(FINDER.findall(line))
    for y in range(n - 1):
        for x in range(n - 1):
            if rows[y][x] == rows[y][x + 1] == rows[y + 1][x] == rows[y + 1][x + 1]:
                score += 3
    dark = sum(r.count("1") for r in rows)
    score += 10 * (abs(dark * 100 // (n * n) - 50) // 5)
    return score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=300)
    args = ap.parse_args()
    excess: dict[int, list[float]] = {m: [] for m in range(8)}
    for n in range(args.tokens):
        size = 120 if n % 2 else 110  # the two ev1 sizes: with and without a guardian (actor)
        text = "EV1:" + base45.b45encode(secrets.token_bytes(size)).decode()
        scores = {m: penalty(modules(text, m)) for m in range(8)}
        best = min(scores.values())
        for m, s in scores.items():
            excess[m].append((s - best) / best)
    print(f"{args.tokens} random ev1-sized payloads; penalty above the best of the 8 masks")
    print("| mask | median | p95 | max |\n|---:|---:|---:|---:|")
    for m, xs in excess.items():
        xs.sort()
        print(f"| {m} | {100 * statistics.median(xs):.1f} % | {100 * xs[int(0.95 * len(xs))]:.1f} % | {100 * xs[-1]:.1f} % |")


if __name__ == "__main__":
    main()
