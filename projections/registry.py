"""Every read model the projector keeps, in one list."""

from projections.runner import Projection
from projections.tickets import TicketsProjection


def all_projections() -> list[Projection]:
    return [TicketsProjection()]
