"""SLA clocks. Both start at ticket creation; the MTTA clock stops at the first acknowledgement,
the MTTR clock at the first resolution. Targets are the org's, for the ticket's severity at the
time of the check (so a severity upgrade tightens the deadlines). A closed or merged ticket
breaches nothing more."""

from datetime import datetime, timedelta
from typing import Literal

from domain.config import SlaTarget

SlaKind = Literal["mtta", "mttr"]


def target_minutes(target: SlaTarget, kind: SlaKind) -> int:
    return target.mtta_minutes if kind == "mtta" else target.mttr_minutes


def deadline(created_at: datetime, target: SlaTarget, kind: SlaKind) -> datetime:
    return created_at + timedelta(minutes=target_minutes(target, kind))


def at_risk_at(created_at: datetime, target: SlaTarget, kind: SlaKind, percent: int) -> datetime:
    """When the clock has used `percent` of its budget: the ticket is at risk of breaching it."""
    return created_at + timedelta(minutes=target_minutes(target, kind)) * percent / 100
