"""The voucher's own state: loss report (挂失), reinstatement and cancellation (注销).

Each change holds the voucher's row and reads it again first (`rowlock.held`, through
`vouchers.hold_usable`): a change that read the voucher before another committed must not undo
it. Above all a cancellation, which is terminal, must not be turned back into a suspension
(which a reinstatement could then make active). Every holder change holds the same row
(`vouchers.hold_usable`), so none commits after a loss report or a cancellation it raced."""
from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from ..store import rowlock
from ..store.models import ChannelBinding, Voucher
from . import records, revocations
from .vouchers import hold_usable, utc


def report_lost(session: Session, rt, voucher: Voucher) -> dict:
    """Suspend at once in every channel; every outstanding token stops verifying."""
    hold_usable(session, voucher, lost_ok=True)
    if voucher.status != "suspended":
        voucher.status, voucher.suspended_at = "suspended", utc(rt.clock.now())
        voucher.tokens_valid_after = voucher.suspended_at
        # The suspension is written before the record: on PostgreSQL its row lock orders this
        # report with the scans (each share-locks the voucher as it writes, app/services/scans.py),
        # so a scan accepted before the report has the earlier record id.
        session.flush()
        # `at` is the suspension time itself: after a reinstatement, a caching scanner keeps
        # refusing the tokens issued at or before it, as the service does.
        revocations.add(session, kind="voucher", subject=voucher.voucher_id, reason="reported_lost",
                        created_at=voucher.suspended_at)
        records.record(session, voucher, "loss_report")
    session.commit()
    return {"voucher_id": voucher.voucher_id, "status": voucher.status}


def reinstate(session: Session, rt, voucher: Voucher, channel_id: str) -> None:
    """Back to active after a channel re-verification; every code issued before it stays dead.

    Not only the codes from before the loss: a code whose issuance read the voucher just before
    the loss report committed can be dated after the suspension (issuance does not lock the
    voucher). It was never accepted while suspended, and moving `tokens_valid_after` on to the
    reinstatement keeps it dead now; a holder's first code after it is dated later (app/services/qr.py).

    Every holder session opened before it ends too, in every channel (each binding's session
    epoch moves on): a session still open on the lost phone, or opened from it while suspended,
    would otherwise issue codes again. The holder opens a new one through the channel."""
    hold_usable(session, voucher, lost_ok=True)
    if voucher.status == "suspended":
        voucher.status, voucher.tokens_valid_after = "active", utc(rt.clock.now())
        session.execute(update(ChannelBinding).where(ChannelBinding.voucher_id == voucher.id)
                        .values(session_epoch=ChannelBinding.session_epoch + 1)
                        .execution_options(synchronize_session=False))
        records.record(session, voucher, "reinstate", channel=channel_id)
        # Caching scanners learn it from the feed too, or they would refuse the fresh codes;
        # its `at` is the new threshold, which they apply as the service does.
        revocations.add(session, kind="reinstated", subject=voucher.voucher_id, reason="reinstated",
                        created_at=voucher.tokens_valid_after)


def cancel(session: Session, rt, voucher: Voucher, *, by: str) -> dict:
    """Cancel for good (an operator's act, `evoucher vouchers cancel`): every outstanding code and
    every code a guardian with this voucher showed for a member stop at once, holder requests that
    change anything are refused, and no reinstatement brings it back. The person may activate
    again through a channel and gets a new voucher id (card replacement). Cancelling a cancelled
    voucher changes nothing."""
    rowlock.held(session, voucher)
    if voucher.status != "cancelled":
        now = utc(rt.clock.now())
        voucher.status, voucher.tokens_valid_after = "cancelled", now
        session.flush()  # as a loss report: the row lock orders this with the scans
        revocations.add(session, kind="voucher", subject=voucher.voucher_id, reason="cancelled", created_at=now)
        records.record(session, voucher, "cancellation", by=by)
    session.commit()
    return {"voucher_id": voucher.voucher_id, "status": voucher.status}
