"""Study leases: a run holds its study's lease while it works, renewing a heartbeat, so that a second run of the same
study is refused with who holds it, and a lease whose holder died can be taken over."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from paretopress.kernel.errors import UserError
from paretopress.store.files import process_alive
from paretopress.store.tables import Lease, now

HEARTBEAT_SECONDS = 10.0
#: a heartbeat this old means the holder is gone even when it ran on another machine (where its pid says nothing)
STALE_SECONDS = 120.0


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int

    @classmethod
    def this_process(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid())


def take_lease(session: Session, study_id: int, name: str, takeover: bool) -> None:
    """Take the study's lease inside the caller's transaction, or refuse while another live run holds it."""
    holder = Holder.this_process()
    row = session.get(Lease, study_id)
    if row is not None and not takeover and Holder(row.host, row.pid) != holder and not _stale(row):
        age = (now() - _utc(row.heartbeat)).total_seconds()
        raise UserError(
            f"study {name!r} is being run by pid {row.pid} on {row.host} since {_utc(row.since):%Y-%m-%d %H:%M:%S} "
            f"UTC (last heartbeat {age:.0f} s ago); wait for it, or pass --takeover if that process is gone"
        )
    if row is not None:
        session.delete(row)
        session.flush()
    session.add(Lease(study_id=study_id, host=holder.host, pid=holder.pid))


def release_lease(session: Session, study_id: int) -> None:
    """Drop the lease if this process holds it (a run that was taken over leaves its successor's alone)."""
    session.execute(delete(Lease).where(*_ours(study_id)))


def _ours(study_id: int) -> tuple:
    """The conditions of this process's lease on the study."""
    holder = Holder.this_process()
    return Lease.study_id == study_id, Lease.host == holder.host, Lease.pid == holder.pid


def _stale(row: Lease) -> bool:
    if row.host == socket.gethostname() and not process_alive(row.pid):
        return True
    return (now() - _utc(row.heartbeat)).total_seconds() > STALE_SECONDS


def _utc(moment: datetime) -> datetime:
    """SQLite keeps no time zone: stored times are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Heartbeat:
    """Renews this process's lease every HEARTBEAT_SECONDS from a thread of the controller (still one writer
    process), so a run on another machine can tell a live holder from a dead one."""

    def __init__(self, engine, study_id: int) -> None:
        self.engine, self.study_id = engine, study_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="paretopress-lease", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                with Session(self.engine) as session, session.begin():
                    session.execute(update(Lease).where(*_ours(self.study_id)).values(heartbeat=now()))
            except Exception:  # a full disk fails the controller's own next write, with its message
                continue
