"""Gunicorn settings for production; every value can be overridden from the environment."""
import json
import logging
import os
import tempfile

from gunicorn.glogging import Logger

bind = os.environ.get("EVOUCHER_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("EVOUCHER_THREADS", "1"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = 30
graceful_timeout = 20
keepalive = 5
max_requests = 20000
max_requests_jitter = 2000
# The access log is written by the app as JSON (no tokens, no ID numbers); gunicorn's own is off.
accesslog = None
errorlog = "-"
# gunicorn's control socket (gunicornc) is one path per user, ~/.gunicorn/gunicorn.ctl: a second
# instance on the host would take it over from the first. Nothing here uses it; signals do.
control_socket_disable = True
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


class _JsonLines(logging.Formatter):
    """gunicorn's own lines in the app's form, one compact JSON object each. The master's (start,
    workers booted and exited, timeouts) carry no request data; in a worker, where a request
    gunicorn refuses is quoted, post_worker_init hands the lines to the app's scrubbing formatter."""

    def format(self, record):
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                 "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str)


class JsonLogger(Logger):
    """gunicorn's logger with its error log (its only one here) written as JSON lines."""

    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(_JsonLines())


logger_class = JsonLogger

# Metrics from every worker are merged through a shared directory.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="evoucher-metrics-")


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
    try:
        fold_metrics(os.environ["PROMETHEUS_MULTIPROC_DIR"], worker.pid)
    except Exception as exc:  # metrics never stop the master; the worker's files stay, and count
        server.log.warning("could not fold the metrics of worker %s: %s", worker.pid, exc.__class__.__name__)


FOLD_LOCK = "fold.lock"  # app/metrics.py reads the folder under a shared lock on this file


def fold_metrics(directory, pid):
    """Add an exited worker's counters and histograms to one archive file per type, then delete
    its files. Each worker writes files of its own, and every /metrics reads all of them: with a
    worker replaced every max_requests requests, the folder would otherwise grow by two files a
    restart, and a scrape with it (7 s after 4,000 restarts, a day under load)."""
    import fcntl

    from prometheus_client.mmap_dict import MmapedDict, mmap_key
    from prometheus_client.multiprocess import MultiProcessCollector

    with open(os.path.join(directory, FOLD_LOCK), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # no scrape sees the counts twice or not at all
        for typ in ("counter", "histogram"):
            dead = os.path.join(directory, f"{typ}_{pid}.db")
            if not os.path.exists(dead):
                continue
            archive = os.path.join(directory, f"{typ}_archive.db")
            sources = [f for f in (archive, dead) if os.path.exists(f)]
            merged = MultiProcessCollector.merge(sources, accumulate=False)  # values as the files hold them
            partial = os.path.join(directory, f"{typ}_archive.partial")  # not *.db: never read
            if os.path.exists(partial):
                os.remove(partial)
            out = MmapedDict(partial)
            try:
                for metric in merged:
                    for sample in metric.samples:
                        key = mmap_key(metric.name, sample.name, list(sample.labels), list(sample.labels.values()),
                                       metric.documentation)
                        out.write_value(key, sample.value, 0.0)
            finally:
                out.close()
            os.replace(partial, archive)
            os.remove(dead)


def post_worker_init(worker):
    """Build SM2 verification tables before the first scan rather than during it; then move
    everything loaded so far out of the garbage collector's sight."""
    import gc

    from app.extensions import runtime
    from app.logs import JsonFormatter
    from app.services import keys

    for handler in worker.log.error_log.handlers:  # what gunicorn says in a worker, scrubbed
        handler.setFormatter(JsonFormatter())
    app = worker.wsgi  # the Flask app once loaded
    try:
        with app.app_context():
            rt = runtime()
            keys.keyring(rt, rt.session()).warm()
    except Exception as exc:  # a missing key table is reported by /readyz, not fatal here
        worker.log.warning("could not warm the keyring: %s", exc.__class__.__name__)
    # The app, its modules, SQLAlchemy's mappers and Flask live as long as the worker. Without
    # this, every full collection walks their ~130,000 objects again: 85-100 ms, in whichever
    # request happens to trip it (about once per 4,000 scans; docs/benchmarks.md).
    gc.freeze()
