"""Prometheus metrics (multi-process aware under gunicorn)."""
from __future__ import annotations

import fcntl
import os

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               generate_latest, multiprocess)

REQUESTS = Counter("evoucher_http_requests_total", "HTTP requests", ["method", "endpoint", "status"])
LATENCY = Histogram("evoucher_http_request_duration_seconds", "Request latency", ["endpoint"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
SCANS = Counter("evoucher_scans_total", "Scans by result", ["result"])
TOKENS = Counter("evoucher_tokens_issued_total", "QR tokens issued", ["format"])
ACTIVATIONS = Counter("evoucher_activations_total", "Activations by channel and result",
                      ["channel", "result"])
STORE_ERRORS = Counter("evoucher_store_errors_total", "Ephemeral store failures", ["operation"])


def render() -> tuple[bytes, str]:
    """The exposition text for this process, or for all workers in multi-process mode."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, directory)
        # gunicorn's master folds an exited worker's files into an archive under an exclusive
        # lock on this file (gunicorn.conf.py, fold_metrics): read between two folds.
        with open(os.path.join(directory, "fold.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
