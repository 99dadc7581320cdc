#!/usr/bin/env python3
"""Where a scan's time goes, section by section, in one process (no HTTP, no second worker).

Run by hand from the project root:

    .venv/bin/python bench/scan_sections.py [--calls 4000]
    .venv/bin/python bench/scan_sections.py --database-url postgresql://postgres@127.0.0.1:5432/evbench \\
        --redis-url redis://127.0.0.1:6379/14        # scratch database: its tables are emptied

It builds the same instance as bench/inprocess.py, wraps the scan path's functions in timers
(wall time, so on PostgreSQL and Redis a round trip counts in the section that waits for it;
with --cpu, the thread's CPU time instead) and
prints the mean µs per scan of each, beside GET /healthz's access line. Sections nest: `scan`
holds `_scan`, which holds most of the others; `_write_phase.enter` is the writer lock and the
rate count, `_write_phase.exit` the lock's release and the WAL checkpoint every 256th time.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import inprocess  # noqa: E402  (bench/inprocess.py: the instance, the requests)

TOTAL: collections.Counter = collections.Counter()
CLOCK = [time.perf_counter]  # --cpu: this thread's CPU time instead of wall time


def timed(owner, name: str, label: str | None = None) -> None:
    real, label = getattr(owner, name), label or name

    def wrapper(*args, **kwargs):
        started = CLOCK[0]()
        try:
            return real(*args, **kwargs)
        finally:
            TOTAL[label] += CLOCK[0]() - started
    setattr(owner, name, wrapper)


def timed_context(owner, name: str) -> None:
    real = getattr(owner, name)

    @contextlib.contextmanager
    def wrapper(*args, **kwargs):
        started = CLOCK[0]()
        with real(*args, **kwargs) as value:
            TOTAL[name + ".enter"] += CLOCK[0]() - started
            yield value
            leaving = CLOCK[0]()
        TOTAL[name + ".exit"] += CLOCK[0]() - leaving
    setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--cpu", action="store_true",
                    help="time each section by this thread's CPU time (time.thread_time), not wall time: "
                         "what a section costs the worker, without its waits for PostgreSQL or Redis")
    inprocess.parse_and_run(ap, run, "evsections-")


def run(args, tmp: str) -> None:
    import logging

    app, holders, insts = inprocess.build(args, tmp)
    if args.cpu:
        CLOCK[0] = time.thread_time
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # formatted, not printed

    from app import logs
    from app.api import auth, institutions
    from app.extensions import runtime
    from app.services import keys, scans
    from crypto import tokens

    with app.app_context():
        rt = runtime()
        key = keys.keyring(rt, rt.session(), refresh=True).current
    for name in ("_verify", "_load", "_check", "_body", "_write_accepted", "_count_and_mark", "_scan", "scan"):
        timed(scans, name)
    timed_context(scans, "_write_phase")
    timed(auth, "claims_for")
    timed(institutions, "body")
    timed(logs, "access_log")
    timed(logs, "scrub")
    timed(logs.JsonFormatter, "format", "access_log.format")

    now = int(time.time())
    pairs = [(h, insts[h["active_region"]]) for h in holders if h["active_region"] in insts]
    envs = []
    for k in range(args.calls + 200):
        holder, inst_token = pairs[k % len(pairs)]
        text = tokens.issue(key, voucher_id=holder["voucher_id"], region=holder["active_region"], iat=now,
                            lifetime=300, token_id=tokens.new_token_id(), fmt="ev1", issuer=rt.config.issuer)
        envs.append(inprocess.environ(app, "POST", "/v1/scans", inst_token, {"token": text, "purpose": "registration"}))
    for env, raw in envs[:200]:  # warm up
        assert inprocess.call(app, env, raw) == 200
    healthz = inprocess.environ(app, "GET", "/healthz")
    TOTAL.clear()
    times = []
    for _ in range(2000):
        started = CLOCK[0]()
        inprocess.call(app, *healthz)
        times.append(CLOCK[0]() - started)
    healthz_log = {k: v / 2000 for k, v in TOTAL.items()}
    print(f"GET /healthz: median {1e6 * statistics.median(times):.0f} µs")
    TOTAL.clear()
    times = []
    for env, raw in envs[200:]:
        started = CLOCK[0]()
        assert inprocess.call(app, env, raw) == 200
        times.append(CLOCK[0]() - started)
    print(f"POST /v1/scans: median {1e6 * statistics.median(times):.0f} µs, mean {1e6 * statistics.mean(times):.0f} µs")
    print(f"{'section':24s} {'µs/scan':>8s} {'µs/healthz':>11s}")
    for name, total in TOTAL.most_common():
        other = healthz_log.get(name)
        print(f"{name:24s} {1e6 * total / args.calls:8.1f} {'' if other is None else f'{1e6 * other:11.1f}'}")


if __name__ == "__main__":
    main()
