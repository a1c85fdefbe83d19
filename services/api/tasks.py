"""A ticket's task checklist: list, add, complete, reopen and assign (investigation.get / .set)."""

import uuid

import msgspec
from aiohttp import web

from domain.commands import AddTask, Name, TaskChanges, UpdateTask
from domain.tasks import Description, Task, Title
from services.api.bodies import json_body
from services.api.databases import pool_of
from services.api.dispatch import on_ticket
from services.api.errors import invalid, not_found
from services.api.lookup import config_of, ticket_id_or_404
from services.api.responses import json_response
from services.commands.repository import load_states


class TaskBody(msgspec.Struct, forbid_unknown_fields=True):
    title: Title
    description: Description | None = None
    mandatory: bool = False
    assignee: Name | None = None


class TaskList(msgspec.Struct):
    tasks: list[Task]


async def list_tasks(request: web.Request) -> web.Response:
    """From the ticket's events, as the ticket page reads it: a task just added is listed."""
    ticket_id = await ticket_id_or_404(request)
    async with pool_of(request).acquire() as conn:
        state = (await load_states(conn, [ticket_id])).get(ticket_id)
    if state is None:  # archived or purged since the lookup
        raise not_found(f"ticket {request.match_info['number']} not found")
    return json_response(TaskList(list(state.tasks.values())))


async def add_task(request: web.Request) -> web.Response:
    b = await json_body(request, TaskBody)
    task = Task(uuid.uuid4(), b.title, b.description, b.mandatory, b.assignee)
    limit = (await config_of(request)).max_tasks_per_ticket
    await on_ticket(request, lambda tid: AddTask(tid, task, limit))
    return json_response(task, status=201)


async def update_task(request: web.Request) -> web.Response:
    try:
        task_id = uuid.UUID(request.match_info["task_id"])
    except ValueError:
        raise invalid("task_id", "task_id must be a UUID") from None
    changes = await json_body(request, TaskChanges)
    outcome = await on_ticket(request, lambda tid: UpdateTask(tid, task_id, changes))
    [state] = outcome.states.values()
    return json_response(state.tasks[task_id])
