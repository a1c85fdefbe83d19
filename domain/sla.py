"""SLA clocks. Both start at ticket creation; the MTTA clock stops at the first acknowledgement,
the MTTR clock at the first resolution. Targets are the org's, for the ticket's severity at the
time of the check (so a severity upgrade tightens the deadlines). A closed or merged ticket
breaches nothing more."""

from datetime import datetime, timedelta
from typing import Literal

from domain.config import SlaTarget
from domain.lifecycle import OPEN

SlaKind = Literal["mtta", "mttr"]


def target_minutes(target: SlaTarget, kind: SlaKind) -> int:
    return target.mtta_minutes if kind == "mtta" else target.mttr_minutes


def deadline(created_at: datetime, target: SlaTarget, kind: SlaKind) -> datetime:
    return created_at + timedelta(minutes=target_minutes(target, kind))


def at_risk_at(created_at: datetime, target: SlaTarget, kind: SlaKind, percent: int) -> datetime:
    """When the clock has used `percent` of its budget: the ticket is at risk of breaching it."""
    return created_at + timedelta(minutes=target_minutes(target, kind)) * percent / 100


def next_deadline(
    status: str,
    created_at: datetime,
    acknowledged_at: datetime | None,
    resolved_at: datetime | None,
    target: SlaTarget,
) -> datetime | None:
    """The deadline of an open ticket's running clock (MTTA until acknowledged, then MTTR until
    resolved), which the queue's `sla_due` sort orders by; none for a ticket with no clock running.
    The tickets table keeps it by trigger (migration 0032: ticketing_sla_due_at, the same rule)."""
    if status not in OPEN:
        return None
    if acknowledged_at is None:
        return deadline(created_at, target, "mtta")
    if resolved_at is None:
        return deadline(created_at, target, "mttr")
    return None
