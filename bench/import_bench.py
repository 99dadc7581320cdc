#!/usr/bin/env python3
"""Benchmark `evoucher enrolments import` on a fresh embedded-SQLite instance.

Run by hand (never by the test suite), from the project root:

    .venv/bin/python bench/import_bench.py                 # 100,000 rows through the CLI
    .venv/bin/python bench/import_bench.py --rows 20000 --profile   # in-process, cProfile top 25
    .venv/bin/python bench/import_bench.py --reimport      # also time a second, update-only pass

It writes N CSV rows (valid GB 11643 ID numbers, distinct person_no, about one person in ten
insured in two regions) to a temp file, creates a temp instance folder (EVOUCHER_INSTANCE, no
DATABASE_URL, so SQLite), runs `evoucher db upgrade`, then times `evoucher enrolments import`.
Everything it makes lives under one temp dir that is removed at the end (--keep keeps it).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

sys.path.insert(0, os.path.join(ROOT, "bench"))

from _machine import describe, system_cpu, wait_quiet  # noqa: E402
from crypto import idcard  # noqa: E402

HEADER = ["person_no", "id_type", "id_number", "name", "phone", "region_code", "insurance_type",
          "status", "since"]
# Real district prefixes (GB/T 2260) and the pooling region each one belongs to.
DISTRICTS = [("110105", "110000"), ("110108", "110000"), ("320682", "320682"), ("410702", "410700"),
             ("410703", "410700"), ("310104", "310000"), ("440305", "440300"), ("330106", "330100")]
OTHER_REGIONS = ["110000", "320682", "410700", "310000", "440300", "330100"]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀英华"


def generate(path: str, rows: int, seed: int = 20240601) -> dict:
    """Write `rows` CSV rows; returns counts. ~10% of persons have two enrolments."""
    rnd = random.Random(seed)
    start = dt.date(1940, 1, 1)
    span = (dt.date(2023, 12, 31) - start).days
    seen: set[str] = set()
    persons = written = two = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        while written < rows:
            persons += 1
            prefix, region = DISTRICTS[rnd.randrange(len(DISTRICTS))]
            while True:
                birth = (start + dt.timedelta(days=rnd.randrange(span))).strftime("%Y%m%d")
                body = prefix + birth + f"{rnd.randrange(1000):03d}"
                if body not in seen:
                    seen.add(body)
                    break
            number = body + idcard.check_char(body)
            name = rnd.choice(SURNAMES) + rnd.choice(GIVEN) + (rnd.choice(GIVEN) if rnd.random() < 0.6 else "")
            phone = f"1{rnd.choice('3456789')}{rnd.randrange(10**9):09d}"
            base = [f"P{persons:09d}", "01", number, name, phone]
            itype = "employee" if rnd.random() < 0.55 else "resident"
            w.writerow(base + [region, itype, "active", f"{rnd.randint(1995, 2023)}-01-01"])
            written += 1
            if written < rows and persons % 10 == 0:  # one person in ten: a second pooling area
                other = rnd.choice([r for r in OTHER_REGIONS if r != region])
                status = "active" if rnd.random() < 0.9 else "suspended"
                w.writerow(base + [other, "resident", status, f"{rnd.randint(2005, 2023)}-07-01"])
                written += 1
                two += 1
    return {"rows": written, "persons": persons, "persons_with_two": two}


def _env(instance: str) -> dict:
    env = dict(os.environ)
    env["EVOUCHER_INSTANCE"] = instance
    for name in ("DATABASE_URL", "REDIS_URL", "EVOUCHER_MASTER_KEY"):
        env.pop(name, None)
    env.setdefault("LOG_LEVEL", "WARNING")
    return env


def _evoucher() -> list[str]:
    exe = os.path.join(ROOT, ".venv", "bin", "evoucher")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "app.cli"]


def run_cli(instance: str, csv_path: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run(_evoucher() + ["enrolments", "import", csv_path], env=_env(instance), cwd=ROOT,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"import failed with exit code {proc.returncode}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return elapsed, report


def run_profiled(instance: str, csv_path: str, top: int) -> tuple[float, dict]:
    """In-process: the same code path as the CLI (enrolment_import.import_text) under cProfile."""
    import cProfile
    import pstats

    os.environ.update({k: v for k, v in _env(instance).items() if k in ("EVOUCHER_INSTANCE", "LOG_LEVEL")})
    for name in ("DATABASE_URL", "REDIS_URL", "EVOUCHER_MASTER_KEY"):
        os.environ.pop(name, None)
    from app import create_app
    from app.config import Config
    from app.extensions import runtime
    from app.services import enrolment_import

    app = create_app(Config.from_env())
    with open(csv_path, encoding="utf-8") as fh:
        text = fh.read()
    prof = cProfile.Profile()
    with app.app_context():
        rt = runtime()
        t0 = time.perf_counter()
        prof.enable()
        report = enrolment_import.import_text(rt.session(), rt, text, "csv")
        prof.disable()
        elapsed = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return elapsed, {k: v for k, v in report.as_dict().items() if k != "errors"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--target", type=float, default=60.0, help="seconds allowed for --rows (scaled)")
    ap.add_argument("--profile", action="store_true", help="run in-process under cProfile instead of the CLI")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--reimport", action="store_true", help="then import the same file again (updates)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--max-wait", type=float, default=180,
                    help="wait up to this long for a quiet machine before each pass (0: do not)")
    args = ap.parse_args()
    if not 1 <= args.rows <= 2_000_000:
        raise SystemExit("--rows must be between 1 and 2,000,000")

    tmp = tempfile.mkdtemp(prefix="evoucher-import-bench-")
    try:
        csv_path = os.path.join(tmp, "enrolments.csv")
        instance = os.path.join(tmp, "instance")
        t0 = time.perf_counter()
        counts = generate(csv_path, args.rows)
        print(f"generated {counts['rows']:,} rows for {counts['persons']:,} persons "
              f"({counts['persons_with_two']:,} with two enrolments) in {time.perf_counter() - t0:.1f} s; "
              f"{os.path.getsize(csv_path) / 1e6:.1f} MB")
        up = subprocess.run(_evoucher() + ["db", "upgrade"], env=_env(instance), cwd=ROOT,
                            capture_output=True, text=True)
        if up.returncode != 0:
            sys.stderr.write(up.stderr[-3000:])
            raise SystemExit("evoucher db upgrade failed")

        passes = [("first import", False)] + ([("re-import (updates)", True)] if args.reimport else [])
        results = []
        print(f"machine: {describe()}")
        for label, _ in passes:
            if args.max_wait:
                wait_quiet(0.15, args.max_wait)
            b0 = system_cpu()
            c0 = os.times()
            if args.profile:
                elapsed, report = run_profiled(instance, csv_path, args.top)
            else:
                elapsed, report = run_cli(instance, csv_path)
            b1 = system_cpu()
            c1 = os.times()
            own = (c1.children_user + c1.children_system + c1.user + c1.system) - \
                (c0.children_user + c0.children_system + c0.user + c0.system)
            total = b1[1] - b0[1]
            other = ((b1[0] - b0[0]) - own) / total if total else 0.0
            rate = counts["rows"] / elapsed
            results.append((label, elapsed, rate, report))
            print(f"{label}: {counts['rows']:,} rows in {elapsed:.2f} s = {rate:,.0f} rows/s  report={report}")
            if not args.profile:  # in-process, own CPU would include start-up: not comparable
                print(f"  CPU: import {own:.1f} s for {elapsed:.1f} s wall; other processes used "
                      f"{100 * other:.0f}% of the machine meanwhile{' (NOISY)' if other > 0.10 else ''}")
        target = args.target * args.rows / 100_000
        elapsed = results[0][1]
        verdict = "MET" if elapsed < target else "MISSED"
        mode = "in-process (cProfile on, slower than real)" if args.profile else "CLI, process start included"
        print(f"target: {args.rows:,} rows in < {target:.1f} s -> {verdict} ({mode})")
        db = os.path.join(instance, "evoucher.db")
        if os.path.exists(db):
            print(f"database size: {os.path.getsize(db) / 1e6:.1f} MB")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
