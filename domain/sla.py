"""SLA clocks. Both start at ticket creation; the MTTA clock stops at the first acknowledgement,
the MTTR clock at the first resolution. Targets are the org's, for the ticket's severity at the
time of the check (so a severity upgrade tightens the deadlines). A closed or merged ticket
breaches nothing more."""

from datetime import datetime, timedelta
from typing import Literal

from domain.config import SlaTarget

SlaKind = Literal["mtta", "mttr"]


def deadline(created_at: datetime, target: SlaTarget, kind: SlaKind) -> datetime:
    minutes = target.mtta_minutes if kind == "mtta" else target.mttr_minutes
    return created_at + timedelta(minutes=minutes)


def target_minutes(target: SlaTarget, kind: SlaKind) -> int:
    return target.mtta_minutes if kind == "mtta" else target.mttr_minutes


def met(stopped_at: datetime | None, created_at: datetime, target: SlaTarget, kind: SlaKind) -> bool | None:
    """Whether a clock that stopped met its target; None while it is still running."""
    if stopped_at is None:
        return None
    return stopped_at <= deadline(created_at, target, kind)
