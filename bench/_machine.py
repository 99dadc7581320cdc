"""Helpers for the hand-run benchmarks: machine facts and waiting for a quiet machine.

The benchmarks share a small machine (2 cores) with whatever else runs on it (test suites of
other checkouts, databases). A number taken while something else burns a core is worth little,
so each measured run first waits, for a bounded time, until the machine is idle enough."""
from __future__ import annotations

import os
import platform
import time

_TICK = os.sysconf("SC_CLK_TCK")


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as fh:
        vals = [int(v) for v in fh.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return (sum(vals) - idle) / _TICK, sum(vals) / _TICK


def busy_fraction(seconds: float = 2.0) -> float:
    """Share of all cores busy over the next `seconds`."""
    b0, t0 = system_cpu()
    time.sleep(seconds)
    b1, t1 = system_cpu()
    return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


def wait_quiet(max_busy: float = 0.15, max_wait: float = 180.0, log=print) -> float:
    """Wait until less than `max_busy` of the CPU is busy (sampled over 2 s), at most
    `max_wait` seconds; returns the last busy fraction seen (the caller reports it)."""
    deadline = time.time() + max_wait
    busy = busy_fraction()
    warned = False
    while busy > max_busy and time.time() < deadline:
        if not warned:
            log(f"machine busy ({100 * busy:.0f}% of CPU used by others); waiting up to {max_wait:.0f} s")
            warned = True
        busy = busy_fraction()
    return busy


def describe() -> dict:
    """nproc, CPU model, memory, kernel, Python."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "memory": mem, "kernel": platform.release(),
            "python": platform.python_version()}
