#!/usr/bin/env python3
"""Instructions per request under callgrind: a measure of a request's CPU work that does not move
with the machine's load (valgrind counts instructions, not seconds).

Run by hand from the project root (needs valgrind; takes a few minutes):

    .venv/bin/python bench/instructions.py                  # /healthz and POST /v1/scans
    .venv/bin/python bench/instructions.py --endpoints scans --calls 100,400

SQLite only (each replay works on its own copy of the database).

What it does: builds the same instance as bench/inprocess.py (demo data, activated holders,
institution tokens), pre-issues the scan tokens, and saves all of it to a temp folder. Then, for
each endpoint, it runs two replays of that state under `valgrind --tool=callgrind`, one with
fewer calls and one with more (after the same warm-up), each as a fresh process, both at once.
The difference of the two totals divided by the difference of the calls is the instructions a
call costs, start-up and warm-up cancelling out. It also prints, per call, the instructions of
each object file (libpython, libsodium, libsqlite3, ...) and the functions whose own instructions
grew most between the two runs (callgrind_annotate). --out-dir keeps the callgrind files.

Instructions leave out the kernel (system calls, the loopback TCP stack), cache misses and
waiting, and this is one process with one SQLite connection (no second worker emptying its page
cache): compare builds with it, not with bench/http_bench.py's rates.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

WARMUP = 50


def prepare(args, tmp: str) -> str:
    """Build the instance natively; save what a replay needs (with the scan tokens) to state.json."""
    import base64

    import inprocess
    from app.extensions import runtime

    app, holders, insts = inprocess.build(args, tmp)
    with app.app_context():
        key = base64.b64encode(runtime().config.master_key).decode()
    # An hour's lifetime: a replay under valgrind runs for minutes.
    scans = inprocess.scan_tokens(app, holders, insts, WARMUP + max(args.calls), lifetime=3600)
    state = os.path.join(tmp, "state.json")
    with open(state, "w", encoding="utf-8") as fh:
        json.dump({"master_key": key, "instance": os.path.join(tmp, "instance"), "scans": scans,
                   "database_url": args.database_url, "redis_url": args.redis_url}, fh)
    return state


def replay(state_path: str, endpoint: str, calls: int) -> None:
    """Inside valgrind: load the app on the saved instance and make WARMUP + calls requests."""
    import logging

    import inprocess
    from app import create_app
    from app.config import Config

    with open(state_path, encoding="utf-8") as fh:
        state = json.load(fh)
    inst = state["instance"]
    config = Config.from_env({"EVOUCHER_MASTER_KEY": state["master_key"]}, instance_path=inst,
                             database_url=state["database_url"] or f"sqlite:///{inst}/evoucher.db",
                             redis_url=state["redis_url"], scan_rate_per_minute=10000000, log_level="INFO")
    app = create_app(config)
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # formatted, not printed
    if endpoint == "healthz":
        envs = [inprocess.environ(app, "GET", "/healthz")] * (WARMUP + calls)
    else:
        envs = [inprocess.scan_environ(app, inst_token, text) for inst_token, text in state["scans"][:WARMUP + calls]]
    for env, raw in envs:
        status = inprocess.call(app, env, raw)
        assert status < 300, (endpoint, status)


def copy_state(state_path: str, name: str) -> str:
    """A copy of the instance folder for one replay (the two replays run at once, and a database
    shared between them would spend each other's tokens); returns the copy's state file."""
    import sqlite3

    with open(state_path, encoding="utf-8") as fh:
        state = json.load(fh)
    if state["database_url"]:
        raise SystemExit("the replays run on SQLite only: each needs its own copy of the database")
    db = os.path.join(state["instance"], "evoucher.db")
    with sqlite3.connect(db) as conn:  # everything into the database file before it is copied
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    copy = state["instance"] + "." + name
    shutil.copytree(state["instance"], copy)
    state["instance"] = copy
    path = os.path.join(os.path.dirname(state_path), f"state.{name}.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(state, fh)
    return path


def total_ir(out_file: str) -> int:
    with open(out_file, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {out_file}")


def grown(small: str, large: str, calls: int, top: int = 12) -> list[str]:
    """Per call, from the small run to the large one: the instructions of each library (self
    cost, by the object file they run in) and the functions whose own instructions grew most."""
    def table(path):
        out = subprocess.run(["callgrind_annotate", "--threshold=100", path], capture_output=True, text=True).stdout
        rows = {}
        for line in out.splitlines():
            m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(.*)$", line)
            if m and "PROGRAM TOTALS" not in line:
                rows[m.group(2).strip()] = int(m.group(1).replace(",", ""))
        return rows
    a, b = table(small), table(large)
    per = {k: (b[k] - a.get(k, 0)) / calls for k in b}
    objects: dict[str, float] = {}
    for name, d in per.items():
        obj = re.search(r"\[([^\]]*)\]$", name)
        lib = os.path.basename(obj.group(1)) if obj else "?"
        objects[lib] = objects.get(lib, 0) + d
    lines = ["  by object file:"]
    lines += [f"{d:12,.0f}  {lib}" for lib, d in sorted(objects.items(), key=lambda x: -x[1])[:8]]
    lines += ["  functions (self):"]
    for name, d in sorted(per.items(), key=lambda x: -x[1])[:top]:
        short = re.sub(r" \[.*$", "", name)[-100:]
        lines.append(f"{d:12,.0f}  {short}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", default="healthz,scans")
    ap.add_argument("--calls", default="100,300", help="the two replays' call counts, after the warm-up")
    ap.add_argument("--replay", nargs=3, metavar=("STATE", "ENDPOINT", "CALLS"), help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help="copy the callgrind files here (for callgrind_annotate, kcachegrind)")
    known, _ = ap.parse_known_args()
    if known.replay:
        replay(known.replay[0], known.replay[1], int(known.replay[2]))
        return
    import inprocess

    def run(args, tmp):
        args.calls = sorted(int(c) for c in args.calls.split(","))
        small, large = args.calls
        state = prepare(args, tmp)
        env = dict(os.environ, PYTHONHASHSEED="0")
        for endpoint in args.endpoints.split(","):
            procs, outs = [], []
            for n in (small, large):
                out = os.path.join(tmp, f"callgrind.{endpoint}.{n}")
                cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                       os.path.abspath(__file__), "--replay", copy_state(state, f"{endpoint}.{n}"), endpoint, str(n)]
                procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
                outs.append(out)
            for p in procs:
                _, err = p.communicate()
                if p.returncode:
                    raise SystemExit(f"replay failed: {err.decode(errors='replace')[-2000:]}")
            per_call = (total_ir(outs[1]) - total_ir(outs[0])) / (large - small)
            print(f"{endpoint}: {per_call:,.0f} instructions a call ({small} and {large} calls after {WARMUP})")
            print("\n".join(grown(outs[0], outs[1], large - small)))
            if args.out_dir:
                os.makedirs(args.out_dir, exist_ok=True)
                for out in outs:
                    shutil.copy(out, args.out_dir)
    inprocess.parse_and_run(ap, run, "evinstr-")


if __name__ == "__main__":
    main()
