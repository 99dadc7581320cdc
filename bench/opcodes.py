#!/usr/bin/env python3
"""Python bytecode operations per request, by function: a scan's own Python work beside /healthz's.

Run by hand from the project root (about a minute; SQLite unless the backend options are given):

    .venv/bin/python bench/opcodes.py                 # 200 scans and 200 /healthz, top 40 functions
    .venv/bin/python bench/opcodes.py --calls 500 --top 80

It builds the same instance as bench/inprocess.py, calls the WSGI app directly, and counts the
bytecode operations the interpreter runs in each Python function (`sys.settrace` with opcode
events). The count does not move with the machine's load, so two builds can be compared on a busy
machine in a minute, where bench/http_bench.py needs a quiet one and many runs. It sees only
Python: a C call (libsodium's signature check, SQLite, a system call) is one operation, however
long it takes; bench/instructions.py counts those.

It prints the operations of a scan and of a /healthz, then each function's operations a scan
beyond a /healthz (what the scan target is about: a scan's own work against the baseline's),
and the same summed by file.
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import inprocess  # noqa: E402


def _where(code) -> str:
    path = code.co_filename
    for cut in ("site-packages/", ROOT + "/"):
        path = path.split(cut)[-1]
    return f"{path}:{code.co_name}"


def count(app, requests) -> collections.Counter:
    """Operations by function over `requests` (prebuilt (environ, body) pairs)."""
    ops: collections.Counter = collections.Counter()

    def start(frame, _event, _arg):
        frame.f_trace_opcodes, frame.f_trace_lines = True, False
        where = _where(frame.f_code)

        def step(_frame, event, _arg):
            if event == "opcode":
                ops[where] += 1
            return step
        return step

    sys.settrace(start)
    try:
        for env, raw in requests:
            inprocess.call(app, env, raw)
    finally:
        sys.settrace(None)
    return ops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--top", type=int, default=40)
    inprocess.parse_and_run(ap, run, "evopcodes-")


def run(args, tmp: str) -> None:
    app, holders, insts = inprocess.build(args, tmp)
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # formatted, not printed
    n, warm = args.calls, 20
    healthz = [inprocess.environ(app, "GET", "/healthz")] * (n + warm)
    scans = inprocess.scan_environs(app, holders, insts, n + warm)
    for env, raw in healthz[:warm] + scans[:warm]:  # caches, pools, compiled statements
        assert inprocess.call(app, env, raw) < 300
    base, scan = count(app, healthz[warm:]), count(app, scans[warm:])
    print(f"operations a request: GET /healthz {sum(base.values()) / n:,.0f}, "
          f"POST /v1/scans {sum(scan.values()) / n:,.0f}")
    rows = sorted(((scan[k] - base.get(k, 0)) / n, k) for k in scan.keys() | base.keys())[::-1]
    print(f"-- a scan beyond a /healthz, by function (top {args.top}) --")
    for extra, where in rows[:args.top]:
        print(f"{extra:8.1f}  {where}")
    by_file: collections.Counter = collections.Counter()
    for extra, where in rows:
        by_file[where.rsplit(":", 1)[0]] += extra
    print("-- by file --")
    for where, extra in by_file.most_common(args.top):
        print(f"{extra:8.1f}  {where}")


if __name__ == "__main__":
    main()
