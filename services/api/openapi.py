"""The OpenAPI 3.1 document, generated from the route table and the handlers' own msgspec types."""

import html
import re
from typing import Any

import msgspec
from aiohttp import web

from services.api.responses import json_response

DOCUMENT = web.AppKey("openapi", dict)
_PATH_PARAM = re.compile(r"{(\w+)}")
_ERRORS = {
    401: "Missing, malformed, expired or badly signed token",
    403: "The token lacks the permission on an org",
    404: "No such ticket (or one of an org the token cannot see)",
    409: "Conflict: invalid transition, duplicate, or concurrent change",
    413: "Body larger than 1 MiB",
    415: "Body is not JSON",
    422: "Invalid parameter or body field (named in `field`)",
    429: "Rate limited (see Retry-After)",
    503: "Database unavailable or busy (e.g. a read-model rebuild); retry after Retry-After",
}


def build(routes: tuple[Any, ...]) -> dict[str, Any]:
    from services.api.schemas import Error

    types = {Error}
    for r in routes:
        types.update(t for t in (r.body, r.response) if t is not None)
    ordered = sorted(types, key=lambda t: t.__name__)
    schemas, components = msgspec.json.schema_components(ordered, ref_template="#/components/schemas/{name}")
    ref = dict(zip(ordered, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r, ref)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SOC ticketing",
            "version": "1",
            "description": "The LimaCharlie ticketing wire contract: tickets and investigation data.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _operation(r: Any, ref: dict[Any, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    for name in _PATH_PARAM.findall(r.path):
        schema = (
            {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
            if name == "number"
            else {"type": "string"}
        )
        if name.endswith("_id") and name != "detection_id":
            schema = {"type": "string", "format": "uuid"}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    scope = str(r.scope) if r.scope else ""
    if scope == "oid query":
        parameters.append({"name": "oid", "in": "query", "required": True, "schema": {"type": "string"}})
    elif scope == "oids query":
        parameters.append(
            {"name": "oids", "in": "query", "required": True, "schema": {"type": "string"},
             "description": "comma-separated org ids; every one must be allowed by the token"}
        )  # fmt: skip
    for p in r.query:
        parameters.append(
            {
                "name": p.name,
                "in": "query",
                "required": p.required,
                "schema": p.schema,
                "description": p.description,
            }
        )
    op: dict[str, Any] = {"summary": r.summary, "operationId": r.handler.__name__, "parameters": parameters}
    if r.body is not None:
        media = "application/x-www-form-urlencoded" if scope == "oid form" else "application/json"
        op["requestBody"] = {"required": True, "content": {media: {"schema": ref[r.body]}}}
    ok: dict[str, Any] = {"description": "OK"}
    if r.response is not None:
        ok["content"] = {"application/json": {"schema": ref[r.response]}}
    op["responses"] = {str(r.status): ok}
    if r.permission:
        op["security"] = [{"bearerAuth": []}]
        op["x-permission"] = r.permission
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for status, text in _ERRORS.items():
            op["responses"][str(status)] = {"description": text, **error}
    return op


async def document(request: web.Request) -> web.Response:
    return json_response(request.app[DOCUMENT])


async def docs_page(request: web.Request) -> web.Response:
    """A self-contained page (no CDN: it works offline) listing every operation and its schemas."""
    doc = request.app[DOCUMENT]
    rows = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            params = ", ".join(
                f"{p['name']}{'*' if p.get('required') else ''} ({p['in']})" for p in op.get("parameters", [])
            )
            content: dict[str, Any] = op.get("requestBody", {}).get("content", {})
            schema: dict[str, Any] = next(iter(content.values()))["schema"] if content else {}
            body_name = str(schema.get("$ref", "")).rsplit("/", 1)[-1]
            cells = [
                method.upper(),
                f"<code>{html.escape(path)}</code>",
                html.escape(op.get("summary", "")),
                html.escape(op.get("x-permission", "public")),
                html.escape(params),
                html.escape(body_name),
            ]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    schemas = "".join(
        f"<details><summary>{html.escape(name)}</summary><pre>{html.escape(msgspec.json.format(msgspec.json.encode(s)).decode())}</pre></details>"
        for name, s in doc["components"]["schemas"].items()
    )
    page = f"""<!doctype html><html><head><meta charset=utf-8><title>SOC ticketing API</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}.m{{font-weight:bold}}
pre{{background:#f6f6f6;padding:8px}}</style></head><body>
<h1>SOC ticketing API</h1><p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).
Every protected route takes <code>Authorization: Bearer &lt;token&gt;</code>; * marks required parameters.</p>
<table><tr><th>method</th><th>path</th><th>what</th><th>permission</th><th>parameters</th><th>body</th></tr>
{"".join(rows)}</table><h2>Schemas</h2>{schemas}</body></html>"""
    return web.Response(text=page, content_type="text/html")
