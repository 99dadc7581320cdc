"""Rate limits: fixed one-minute windows in the ephemeral store, failing open on an outage."""
from __future__ import annotations

from .. import metrics
from ..errors import DomainError
from ..store.ephemeral import StoreUnavailable

WINDOW = 60  # seconds: every limit is per minute


def enforce(rt, kind: str, subject: str, per_minute: int, detail: str, *, conn=None) -> None:
    """Count one event for `kind:subject`; refuse with `rate_limited` past `per_minute`.

    A limiter outage lets the call through and counts `evoucher_store_errors_total`: limits
    protect capacity, while what must never be skipped (token consumption, nonces, the PIN
    lock) fails closed elsewhere. With `conn`, the SQL store counts inside that transaction."""
    try:
        counted = rt.store.hit(key(kind, subject), per_minute, WINDOW, conn=conn)
    except StoreUnavailable:
        counted = None
    judge(kind, counted, detail)


def key(kind: str, subject: str) -> str:
    return f"{kind}:{subject}"


def judge(kind: str, counted: tuple[bool, int] | None, detail: str) -> None:
    """Refuse on a count the store returned, (allowed, seconds to the next window); None is a
    count the store failed to make, which lets the call through."""
    if counted is None:
        metrics.STORE_ERRORS.labels(f"{kind}_rate").inc()
        return
    allowed, retry = counted
    if not allowed:
        raise DomainError("rate_limited", detail, headers={"Retry-After": str(retry)})
