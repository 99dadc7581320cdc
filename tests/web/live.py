"""A WSGI app served over HTTP from a thread of the test process, and a clock tests move forward.

The browser tests serve the real app this way rather than through gunicorn (tests/api/conftest.py)
because the app then runs on a clock the test holds: a code, a holder session or an institution's
sign-in expires when the test says so, where gunicorn's workers would have to be waited out on
the wall clock. The threaded server answers the browser's parallel requests, one thread per
connection, as gunicorn's gthread workers would.
"""
from __future__ import annotations

import threading
import time

from werkzeug.serving import WSGIRequestHandler, make_server


class RunningClock:
    """Wall time plus an offset that tests move forward, never back: tokens, sessions and rate
    windows age at once on the service's side, while the browser keeps its own time."""

    def __init__(self):
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass  # the app writes its own access line for each request


class LiveServer:
    """`with LiveServer(app) as server:` serves `app` at `server.url` until the block ends."""

    def __init__(self, app):
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"live {self.url}", daemon=True)

    def __enter__(self) -> "LiveServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
        self._server.server_close()
