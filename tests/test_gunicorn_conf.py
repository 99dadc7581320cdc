"""The production gunicorn settings' worker hook: warm keys, then freeze what was loaded."""
from __future__ import annotations

import gc
import logging
import os
import runpy
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_worker_init_freezes_what_the_app_loaded(app, monkeypatch, tmp_path):
    # The settings file makes a metrics directory unless one is set; keep that out of os.environ.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    conf = runpy.run_path(os.path.join(ROOT, "gunicorn.conf.py"))
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        conf["post_worker_init"](SimpleNamespace(wsgi=app, log=logging.getLogger("test")))
        # Long-lived objects (the app among them) are no longer walked by full collections.
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
