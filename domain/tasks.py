"""Task checklists: the steps a team follows for a kind of detection, kept on its ticket.

An org's `task_templates` add their tasks to every ticket they match when it opens; analysts add
more by hand. A mandatory task still open keeps its ticket from being resolved or closed.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

import msgspec

from domain.rules import Glob, ticket_matches
from domain.severity import Severity

Title = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Description = Annotated[str, msgspec.Meta(max_length=8192)]
MAX_TASKS_PER_TEMPLATE = 50
MAX_TASK_TEMPLATES = 100


class TaskSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    title: Title
    description: Description | None = None
    mandatory: bool = False


class TemplateMatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which tickets a template's tasks go on: a category glob and severities (any when left out)."""

    category: Glob = "*"
    severity: Severity | tuple[Severity, ...] = ()


class TaskTemplate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tasks: Annotated[tuple[TaskSpec, ...], msgspec.Meta(min_length=1, max_length=MAX_TASKS_PER_TEMPLATE)]
    match: TemplateMatch = TemplateMatch()


class Task(msgspec.Struct, frozen=True):
    task_id: uuid.UUID
    title: str
    description: str | None = None
    mandatory: bool = False
    assignee: str | None = None
    done: bool = False
    done_at: datetime | None = None


def template_tasks(
    templates: Sequence[TaskTemplate], ticket_id: uuid.UUID, category: str | None, severity: Severity
) -> tuple[Task, ...]:
    """The tasks every matching template puts on a new ticket, in template order. Their ids derive
    from the ticket's, so deciding the opening again gives the same tasks."""
    out: list[Task] = []
    for template in templates:
        m = template.match
        severities = (m.severity,) if isinstance(m.severity, str) else m.severity
        if not ticket_matches(m.category, severities, category, severity):
            continue
        for spec in template.tasks:
            task_id = uuid.uuid5(ticket_id, f"task\x1f{len(out)}")
            out.append(Task(task_id, spec.title, spec.description, spec.mandatory))
    return tuple(out)
