"""The aiohttp application factory and its route table.

Every route declares the permission it needs, where its org comes from (see auth.py) and its
contract; the tenant-isolation tests and the OpenAPI document are both generated from this table.
"""

from pathlib import Path

from aiohttp import web

from domain.commands import EntityChanges, TaskChanges, TelemetryChanges, TicketChanges
from domain.config import OrgConfig
from domain.evidence import ENTITY_TYPES, Artifact, Entity, Telemetry
from domain.lifecycle import STATUSES
from domain.severity import SEVERITIES
from domain.suppressions import SuppressionRequest
from domain.tasks import Task
from projections.reports import GROUP_EXPR, DashboardCounts, SummaryReport, TrendReport
from projections.rule_report import RuleReport
from projections.task_report import TaskReport
from services.api import (
    analysts,
    config,
    console,
    credentials,
    detections,
    evidence,
    extension,
    files,
    health,
    notes,
    openapi,
    orgs,
    reports,
    sso,
    stream,
    suppressions,
    tasks,
    tickets,
    worktracker,
)
from services.api import schemas as s
from services.api.auth import SIGNED_IN, OrgScope, Param, Route, SessionDoor, guard
from services.api.context import EGRESS, HANDLER, POOL, PROBE_POOL, REVOCATIONS
from services.api.databases import PLACEMENT
from services.api.errors import error_middleware
from services.api.ratelimit import RateLimiter
from services.auth.api_keys import TRACK, ApiKeys
from services.auth.credentials import Revocations
from services.auth.oidc import OidcProvider
from services.auth.tokens import TokenService
from services.commands.handlers import CommandHandler
from services.commands.org_purge import Tombstone
from services.commands.suppressions import SuppressionRow
from services.delivery.egress import Fence
from services.delivery.queue import DeliveryStatus
from services.delivery.signing import RevealedSecret, SigningSecretStatus
from services.eventstore import db
from services.eventstore.placement import Placement
from services.evidence.store import EvidenceStore, LocalStore
from services.settings import OidcSettings

MAX_BODY_BYTES = 1024 * 1024
GET, SET = "investigation.get", "investigation.set"
T = "/api/v1/tickets"


def _csv(name: str, values: tuple[str, ...] | None = None, description: str = "") -> Param:
    allowed = f" (any of {', '.join(values)})" if values else ""
    return Param(
        name, {"type": "string", "maxLength": 4096}, description or f"comma-separated {name}{allowed}"
    )


LIST_PARAMS = (
    _csv("status", STATUSES),
    _csv("severity", SEVERITIES),
    _csv("classification", tickets.CLASSIFICATIONS),
    _csv("assignee"),
    _csv("sensor_id"),
    _csv("escalation_group"),
    _csv("tag", description="comma-separated tags; a ticket must have all of them (case-insensitive)"),
    _csv("sla", ("at_risk", "breached"), "open tickets with an SLA clock at risk or breached (either)"),
    Param("search", {"type": "string", "maxLength": 256}, "substring of the detection category or hostname"),
    Param("sort", {"type": "string", "enum": list(tickets.SORTS), "default": "created_at"}),
    Param("order", {"type": "string", "enum": ["asc", "desc"], "default": "desc"}),
    Param("page_size", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
    Param("page_token", {"type": "string", "maxLength": 1024}, "next_page_token of the previous page"),
)
ORG, ORGS, BODY = OrgScope.ORG, OrgScope.ORGS, OrgScope.BODY

CONSOLE_PAGES = ("/", "/tickets/{number}", "/dashboard", "/reports", "/entities", "/admin")

ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", health.healthz, None, summary="Liveness", response=s.Health),
    Route("GET", "/readyz", health.readyz, None, summary="Readiness (database reachable)", response=s.Health),
    Route("GET", "/openapi.json", openapi.document, None, summary="This OpenAPI document"),
    Route("GET", "/docs", openapi.docs_page, None, summary="Browsable API documentation"),
    Route("GET", "/metrics", health.metrics, None, summary="Prometheus metrics of this API process"),
    Route("GET", "/api/v1/whoami", console.whoami, SIGNED_IN, OrgScope.SELF,
          "Who this credential is and, per org, what it may do", response=s.WhoAmI),
    Route("GET", T, tickets.list_tickets, GET, ORGS, "List tickets", LIST_PARAMS, response=s.TicketList),
    Route("GET", "/api/v1/stream", stream.stream, GET, ORGS,
          "Server-sent events: each ticket event of these orgs as it happens (`event: ticket`, the"
          " ticket-events message, `id` its log position); `Last-Event-ID` resumes after a position",
          (Param("oids", {"type": "string"}, "comma-separated org ids", required=True),)),
    Route("GET", T + "/{number}", tickets.get_ticket, GET, ORG, "A ticket and its timeline",
          (Param("expand", {"type": "string", "enum": ["evidence"]},
                 "evidence: also its detections, entities, telemetry and artifacts"),),
          response=s.TicketWithEvents),
    Route("PATCH", T + "/{number}", tickets.patch_ticket, SET, ORG, "Update a ticket (atomically)",
          body=TicketChanges, response=s.TicketOnly),
    Route("POST", T + "/{number}/notes", notes.add_note, SET, ORG, "Add a note", body=notes.NoteBody,
          response=s.Note, status=201),
    Route("POST", T + "/bulk-update", tickets.bulk_update, SET, BODY, "Update up to 200 tickets",
          body=tickets.BulkUpdateBody, response=tickets.BulkUpdateResult),
    Route("POST", T + "/merge", tickets.merge_tickets, SET, BODY, "Merge up to 20 tickets into one",
          body=tickets.MergeBody, response=s.MergeResult),
    Route("POST", T + "/{number}/split", tickets.split_ticket, SET, ORG,
          "Split detections off into a new ticket (undo a wrong grouping or merge)",
          body=tickets.SplitBody, response=tickets.SplitResult, status=201),
    Route("GET", T + "/{number}/tasks", tasks.list_tasks, GET, ORG, "The ticket's task checklist",
          response=tasks.TaskList),
    Route("POST", T + "/{number}/tasks", tasks.add_task, SET, ORG, "Add a task (task_added)",
          body=tasks.TaskBody, response=Task, status=201),
    Route("PATCH", T + "/{number}/tasks/{task_id}", tasks.update_task, SET, ORG,
          "Complete, reopen or assign a task (task_completed, task_reopened, task_assigned)",
          body=TaskChanges, response=Task),
    Route("GET", T + "/{number}/detections", detections.list_detections, GET, ORG, "Linked detections",
          response=s.DetectionList),
    Route("POST", T + "/{number}/detections", detections.link_detection, SET, ORG, "Link a detection",
          body=detections.LinkDetectionBody, response=s.DetectionLinked, status=201),
    Route("DELETE", T + "/{number}/detections/{detection_id}", detections.unlink_detection, SET, ORG,
          "Unlink a detection", response=s.DetectionUnlinked),
    Route("GET", T + "/{number}/entities", evidence.list_entities, GET, ORG, "Entities (IOCs)",
          response=s.EntityList),
    Route("POST", T + "/{number}/entities", evidence.add_entity, SET, ORG, "Add an entity",
          body=evidence.EntityBody, response=Entity, status=201),
    Route("PATCH", T + "/{number}/entities/{entity_id}", evidence.update_entity, SET, ORG,
          "Update an entity", body=EntityChanges, response=Entity),
    Route("DELETE", T + "/{number}/entities/{entity_id}", evidence.remove_entity, SET, ORG,
          "Remove an entity", response=s.Deleted),
    Route("GET", "/api/v1/entities/search", evidence.search_entities, GET, ORGS,
          "Tickets holding an indicator",
          (Param("entity_type", {"type": "string", "enum": list(ENTITY_TYPES)}),
           Param("entity_value", {"type": "string", "minLength": 1, "maxLength": 2048}, required=True)),
          response=s.EntitySearch),
    Route("GET", T + "/{number}/telemetry", evidence.list_telemetry, GET, ORG, "Telemetry references",
          response=s.TelemetryList),
    Route("POST", T + "/{number}/telemetry", evidence.add_telemetry, SET, ORG, "Reference a telemetry event",
          body=evidence.TelemetryBody, response=Telemetry, status=201),
    Route("PATCH", T + "/{number}/telemetry/{telemetry_id}", evidence.update_telemetry, SET, ORG,
          "Update a telemetry reference", body=TelemetryChanges, response=Telemetry),
    Route("DELETE", T + "/{number}/telemetry/{telemetry_id}", evidence.remove_telemetry, SET, ORG,
          "Remove a telemetry reference", response=s.Deleted),
    Route("GET", T + "/{number}/artifacts", evidence.list_artifacts, GET, ORG, "Artifacts",
          response=s.ArtifactList),
    Route("POST", T + "/{number}/artifacts", evidence.add_artifact, SET, ORG, "Attach an artifact",
          body=evidence.ArtifactBody, response=Artifact, status=201),
    Route("DELETE", T + "/{number}/artifacts/{artifact_id}", evidence.remove_artifact, SET, ORG,
          "Remove an artifact", response=s.Deleted),
    Route("POST", T + "/{number}/artifacts/upload", files.upload_artifact, SET, ORG,
          "Upload a file as an artifact: multipart/form-data, its `file` part streamed to the evidence store"
          " (413 over the org's max_upload_bytes; the same file on the ticket is a 409)",
          response=Artifact, status=201),
    Route("GET", T + "/{number}/artifacts/{artifact_id}/content", files.artifact_content, GET, ORG,
          "An uploaded file, as an attachment (Range requests; its SHA-256 in X-Content-SHA256)"),
    Route("GET", T + "/{number}/export", files.export_ticket, GET, ORG,
          "The ticket, its timeline and evidence as JSON; with_data=true: a streamed .tar.gz with the"
          " detections, kept telemetry events and stored files",
          query=(Param("with_data", {"type": "boolean", "default": False}),)),
    Route("GET", "/api/v1/config/{oid}", config.get_config, "org.conf.get", OrgScope.PATH,
          "The org's configuration (defaults until changed)", response=OrgConfig),
    Route("PUT", "/api/v1/config/{oid}", config.put_config, "org.conf.set", OrgScope.PATH,
          "Change the configuration: any subset of keys, validated as a whole (config_updated);"
          " extrahop.api_key is taken here and never shown (its fingerprint is)",
          body=OrgConfig, response=OrgConfig),
    Route("GET", "/api/v1/config/{oid}/webhook", config.get_webhook_status, "org.conf.get", OrgScope.PATH,
          "The webhook's backlog: events not delivered yet, since when, and the last error",
          response=DeliveryStatus),
    Route("GET", "/api/v1/config/{oid}/notifications", config.get_notifications_status, "org.conf.get",
          OrgScope.PATH, "The notifications' backlog: messages not delivered yet, since when, the last"
          " error, and how many a channel refused (no channel's URL)", response=DeliveryStatus),
    Route("GET", "/api/v1/config/{oid}/signing-secret", config.get_signing_secret, "org.conf.get",
          OrgScope.PATH, "The webhook signing secret's fingerprint, age and rotation (never the secret)",
          response=SigningSecretStatus),
    Route("POST", "/api/v1/config/{oid}/signing-secret", config.reveal_signing_secret, "org.conf.set",
          OrgScope.PATH, "Show the signing secret once, or rotate it (the old one signs during the overlap)",
          body=config.RevealBody, response=RevealedSecret),
    Route("DELETE", "/api/v1/orgs/{oid}", orgs.purge, "org.conf.set", OrgScope.OPERATOR,
          "Unsubscribe an org: delete all its ticket data, keep its tombstone, publish org_purged"
          " (operators only; idempotent)", response=Tombstone),
    Route("POST", "/api/v1/orgs/{oid}/subscription", orgs.resubscribe, "org.conf.set", OrgScope.OPERATOR,
          "Re-subscribe a purged org: data detected after its purge flows again, nothing older returns"
          " (operators only; 409 unless its purge completed)", response=Tombstone, status=201),
    Route("PUT", "/api/v1/analysts/{email}", analysts.put_analyst, GET, ORG,
          "Take an analyst out of routing's rotation until away_until (null: back now); org.conf.set,"
          " or the analyst themself", body=analysts.AwayBody, response=analysts.AnalystStatus),
    Route("GET", "/api/v1/credentials", credentials.list_credentials, "org.conf.set", ORG,
          "The tokens that grant this org and its API keys, with their last use (never a secret)",
          response=credentials.Credentials),
    Route("DELETE", "/api/v1/credentials/tokens/{jti}", credentials.revoke_token, "org.conf.set", ORG,
          "Revoke a token by its jti: refused by every API process within seconds",
          response=credentials.Revoked),
    Route("DELETE", "/api/v1/credentials/sessions/{session_id}", credentials.revoke_session, "org.conf.set",
          ORG, "End a console session (single sign-on) with a role in this org: refused from then on",
          response=credentials.Revoked),
    Route("POST", "/api/v1/credentials/api-keys", credentials.create_api_key, "org.conf.set", ORG,
          "Create an API key for the org (the key is shown in this answer only)",
          body=credentials.NewApiKey, response=credentials.CreatedApiKey, status=201),
    Route("DELETE", "/api/v1/credentials/api-keys/{key_id}", credentials.revoke_api_key, "org.conf.set", ORG,
          "Revoke one of the org's API keys", response=credentials.Revoked),
    Route("GET", "/api/v1/config/{oid}/extrahop", config.get_extrahop_status, "org.conf.get", OrgScope.PATH,
          "The ExtraHop detection tracking's backlog: updates not delivered yet, the last error, refusals",
          response=DeliveryStatus),
    Route("GET", "/api/v1/dashboard/counts", reports.dashboard_counts, GET, ORGS,
          "Counts by status and severity, and open SLA breaches, per org and in total",
          response=DashboardCounts),
    Route("GET", "/api/v1/reports/summary", reports.summary_report, GET, ORGS,
          "MTTA/MTTR, SLA compliance, volume and rates over tickets created in a period",
          (Param("from", {"type": "string", "format": "date-time"}, "period start (default: to - 30 days)"),
           Param("to", {"type": "string", "format": "date-time"}, "period end, exclusive (default: now)"),
           Param("group_by", {"type": "string", "enum": list(GROUP_EXPR)})),
          response=SummaryReport),
    Route("GET", "/api/v1/reports/rules", reports.rules_report, GET, ORGS,
          "Rule health: per detection category and source, volume, grouping, suppression, verdicts,"
          " median MTTR and needs_tuning",
          (Param("from", {"type": "string", "format": "date-time"}, "period start (default: to - 30 days)"),
           Param("to", {"type": "string", "format": "date-time"}, "period end, exclusive (default: now)"),
           Param("format", {"type": "string", "enum": ["json", "csv"], "default": "json"})),
          response=RuleReport),
    Route("GET", "/api/v1/reports/trend", reports.trend_report, GET, ORGS,
          "Per day or week: tickets opened and closed, MTTA and MTTR (median, p90), SLA compliance and the"
          " false-positive rate; format=csv for a spreadsheet",
          (Param("from", {"type": "string", "format": "date-time"}, "period start (default: to - 90 days)"),
           Param("to", {"type": "string", "format": "date-time"}, "period end, exclusive (default: now)"),
           Param("interval", {"type": "string", "enum": ["day", "week"], "default": "day"}),
           Param("group_by", {"type": "string", "enum": list(GROUP_EXPR)}),
           Param("format", {"type": "string", "enum": ["json", "csv"], "default": "json"})),
          response=TrendReport),
    Route("GET", "/api/v1/reports/tasks", reports.tasks_report, GET, ORGS,
          "Per task title: completed in the period, the median time to complete, still open",
          (Param("from", {"type": "string", "format": "date-time"}, "period start (default: to - 30 days)"),
           Param("to", {"type": "string", "format": "date-time"}, "period end, exclusive (default: now)")),
          response=TaskReport),
    Route("GET", "/api/v1/suppressions", suppressions.list_suppressions, GET, ORG,
          "The org's suppressions, with what each has held", response=suppressions.SuppressionList),
    Route("POST", "/api/v1/suppressions", suppressions.create_suppression, SET, ORG,
          "Suppress matching detections until expires_at (at most 30 days): kept and counted, no ticket",
          body=SuppressionRequest, response=SuppressionRow, status=201),
    Route("DELETE", "/api/v1/suppressions/{suppression_id}", suppressions.end_suppression, SET, ORG,
          "End a suppression early (it stops holding at once)", response=SuppressionRow),
    Route("GET", "/api/v1/archive", reports.list_archive, GET, ORGS, "Archived tickets, newest first",
          (Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200}),),
          response=reports.ArchiveList),
    Route("GET", "/api/v1/archive/{number}", reports.get_archived, GET, ORG,
          "One archived ticket: its export with the full event history"),
    Route("GET", "/api/v1/assignees", tickets.list_assignees, GET, ORGS, "Assignees in use",
          response=s.AssigneeList),
    *(Route("POST", path, worktracker.create_issue, TRACK, OrgScope.KEY,
            "Jira create-issue, as an ExtraHop trigger sends it: the detection's ticket, new or existing",
            body=worktracker.CreateIssue, response=worktracker.IssueCreated, status=201)
      for path in ("/rest/api/issue", "/rest/api/2/issue")),
    Route("PATCH", "/api/v1/detections/{detection_id}", worktracker.update_detection, TRACK, OrgScope.KEY,
          "The seed script's ticket update for a detection: external ticket, assignee, status, resolution",
          body=worktracker.DetectionUpdate, response=worktracker.DetectionTracked),
    Route("POST", "/v1/extension/request/ext-ticketing", extension.extension_request, GET, OrgScope.FORM,
          "D&R extension request: create_ticket (needs investigation.set) or get_ticket_count",
          body=extension.ExtensionForm, response=s.ExtensionReply),
)  # fmt: skip


def create_app(
    pool: db.Pool,
    handler: CommandHandler,
    tokens: TokenService,
    limiter: RateLimiter,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    probe_pool: db.Pool | None = None,
    egress: Fence | None = None,
    archive_dir: Path = Path(".state/archive"),
    evidence_dir: Path = Path(".state/evidence"),
    evidence: EvidenceStore | None = None,  # None: the local store in evidence_dir
    ticket_url_template: str | None = None,
    streams_per_principal: int = 5,
    oidc: OidcSettings | None = None,
    placement: Placement | None = None,  # None: `pool` holds every org
) -> web.Application:
    """`pool`: the home database (credentials, sessions; every org's too unless `placement` puts
    orgs on other databases)."""
    app = web.Application(
        middlewares=[health.metrics_middleware, error_middleware], client_max_size=max_body_bytes
    )
    app[POOL] = pool
    placed = app[PLACEMENT] = placement or Placement.single(pool)
    app[PROBE_POOL] = probe_pool or pool
    app[HANDLER] = handler
    app[EGRESS] = egress or Fence()  # no allow list: public addresses only
    app[orgs.ARCHIVE_DIR] = archive_dir
    store = app[orgs.EVIDENCE] = evidence or LocalStore(evidence_dir)
    app.on_cleanup.append(lambda _: store.close())
    app[openapi.DOCUMENT] = openapi.build(ROUTES)
    feed = stream.Feed(placed, ticket_url_template, streams_per_principal)
    app[stream.FEED] = feed
    app.cleanup_ctx.append(stream.feed_context(feed))
    app.on_shutdown.append(stream.end_streams)  # before aiohttp waits for open requests to finish
    keys, revocations = ApiKeys(pool), Revocations(pool)
    app[REVOCATIONS] = revocations
    door = None
    if oidc is not None:  # single sign-on: the console's sessions are a way in too
        door = SessionDoor(pool, oidc, tuple(p for p in placed.pools if p is not placed.home))
        app[sso.SSO] = sso.Sso(OidcProvider(oidc), door)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, guard(route, tokens, limiter, keys, revocations, door))
    app.router.add_get("/auth/methods", sso.methods)  # the browser's doors (not the API's contract)
    app.router.add_get("/auth/login", sso.login)
    app.router.add_get("/auth/callback", sso.callback)
    app.router.add_post("/auth/logout", sso.logout)
    for path in CONSOLE_PAGES:  # the console: pages and assets, not part of the API's contract
        app.router.add_get(path, console.page)
    app.router.add_get("/console/{name}", console.asset)
    return app
