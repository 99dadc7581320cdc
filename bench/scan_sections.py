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
holds `_scan`, which holds most of the others; `writes.enter` is the writer lock, `_count` the
rate count, `writes.exit` the lock's release and the WAL checkpoint every 256th time.

    .venv/bin/python bench/scan_sections.py --other-writer    # SQLite only

With --other-writer, another connection to the SQLite file commits a one-row update before
every scan, as the second gunicorn worker's scans do between this worker's: SQLite then drops
this connection's whole page cache at the scan's next transaction and reads every page the
scan touches again. It prints, for scans alone and with the other writer, the median and the
read system calls a scan makes (Linux /proc/self/io), the sections of the second kind, and
(from one more, untimed batch with the other writer) the reads of each statement a scan runs.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sqlite3
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
    ap.add_argument("--other-writer", action="store_true",
                    help="SQLite: another connection commits before every scan (what a second worker does)")
    ap.add_argument("--sqlite-mmap", type=int, default=0, metavar="BYTES",
                    help="SQLite: PRAGMA mmap_size for the app's connections (an experiment; the service sets none)")
    inprocess.parse_and_run(ap, run, "evsections-")


def run(args, tmp: str) -> None:
    import logging

    if (args.other_writer or args.sqlite_mmap) and args.database_url:
        raise SystemExit("--other-writer and --sqlite-mmap are about SQLite: leave out --database-url")
    if args.sqlite_mmap:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        @event.listens_for(Engine, "connect")
        def _mmap(dbapi_conn, _record):
            dbapi_conn.execute(f"PRAGMA mmap_size={int(args.sqlite_mmap)}")
    app, holders, insts = inprocess.build(args, tmp)
    if args.cpu:
        CLOCK[0] = time.thread_time
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # formatted, not printed

    from app import logs
    from app.api import auth, institutions
    from app.services import scans

    for name in ("_verify", "_load", "_check", "_body", "_count", "_write_accepted", "_count_and_mark", "_scan",
                 "scan"):
        timed(scans, name)
    timed_context(scans, "writes")
    timed(auth, "claims_for")
    timed(institutions, "body")
    timed(logs, "access_log")
    timed(logs, "scrub")
    timed(logs.JsonFormatter, "format", "access_log.format")

    envs = inprocess.scan_environs(app, holders, insts, args.calls * (4 if args.other_writer else 1) + 200)
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
    if args.other_writer:
        other = OtherWriter(os.path.join(tmp, "instance", "evoucher.db"))
        batches = [envs[200 + i * args.calls:200 + (i + 1) * args.calls] for i in range(4)]
        for batch, (label, before) in zip(batches, (("alone", None), ("after another connection's commit",
                                                                       other.commit), ("alone", None))):
            TOTAL.clear()
            median, reads = scan_loop(app, batch, before)
            print(f"POST /v1/scans, {label}: median {1e6 * median:.0f} µs, {reads:.1f} read system calls a scan")
            if before is not None:
                sections = dict(TOTAL)  # the table below is of the scans after another connection's commit
        print("read system calls of each statement, after another connection's commit:")
        for statement, reads in statement_reads(app, batches[3], other.commit).items():
            print(f"  {reads:5.1f}  {statement}")
        TOTAL.clear()
        TOTAL.update(sections)
    else:
        TOTAL.clear()
        median, _ = scan_loop(app, envs[200:], None)
        print(f"POST /v1/scans: median {1e6 * median:.0f} µs")
    print(f"{'section':24s} {'µs/scan':>8s} {'µs/healthz':>11s}")
    for name, total in TOTAL.most_common():
        other = healthz_log.get(name)
        print(f"{name:24s} {1e6 * total / args.calls:8.1f} {'' if other is None else f'{1e6 * other:11.1f}'}")


class OtherWriter:
    """A second connection to the instance's SQLite file that commits a one-row update of its
    own table (made here, in the temp instance) whenever asked."""

    def __init__(self, path: str):
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA busy_timeout=15000")
        self.db.execute("CREATE TABLE IF NOT EXISTS bench_other_writer (n INTEGER)")
        self.db.execute("INSERT INTO bench_other_writer VALUES (0)")

    def commit(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("UPDATE bench_other_writer SET n = n + 1")
        self.db.execute("COMMIT")


def read_syscalls() -> int:
    """This process's read system calls so far (read, pread64, readv...: Linux's syscr)."""
    with open("/proc/self/io", "rb") as fh:
        return int(fh.read().split(b"syscr: ")[1].split(b"\n")[0])


def reads_of(first: int) -> int:
    """Read system calls since `first = read_syscalls()`, less those of reading the counter."""
    return read_syscalls() - first - _COUNTER_READS


_COUNTER_READS = 0
_COUNTER_READS = reads_of(read_syscalls())  # what one read of the counter costs


def scan_loop(app, envs, before) -> tuple[float, float]:
    """Scan every request of `envs` (calling `before()` ahead of each, untimed); the median
    time and the read system calls per scan."""
    times, reads = [], 0
    for env, raw in envs:
        if before is not None:
            before()
        first = read_syscalls()
        started = CLOCK[0]()
        assert inprocess.call(app, env, raw) == 200
        times.append(CLOCK[0]() - started)
        reads += reads_of(first)
    return statistics.median(times), reads / len(envs)


def statement_reads(app, envs, before) -> dict[str, float]:
    """Read system calls per execution of each prepared statement and of the commit, scanning
    `envs` with `before()` ahead of each (the counting itself makes these scans slow)."""
    from sqlalchemy.engine import Connection

    from app.store.prepared import Prepared

    reads, runs = collections.Counter(), collections.Counter()

    def counted(owner, name, label_of):
        real = getattr(owner, name)

        def wrapper(self, *args):
            first = read_syscalls()
            try:
                return real(self, *args)
            finally:
                label = label_of(self)
                reads[label] += reads_of(first)
                runs[label] += 1
        setattr(owner, name, wrapper)
        return real

    def label(prepared):
        stmt = prepared.stmt
        return (stmt.__name__ if callable(stmt) and not hasattr(stmt, "compile") else " ".join(str(stmt).split()))[:70]
    real_execute = counted(Prepared, "_execute", label)
    real_commit = counted(Connection, "commit", lambda _conn: "COMMIT")
    try:
        scan_loop(app, envs, before)
    finally:
        Prepared._execute, Connection.commit = real_execute, real_commit
    return {name: reads[name] / runs[name] for name in runs}


if __name__ == "__main__":
    main()
