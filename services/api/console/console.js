// The analysts' console. Plain DOM, no framework, no third-party code: every datum comes from the
// public API with the analyst's own token, and is written into the page as text, never as HTML.
"use strict";

const V = JSON.parse(document.getElementById("vocabulary").textContent);
const TOKEN = "ticketing.token";
const POLL_MS = 10000;
const session = { token: sessionStorage.getItem(TOKEN), who: null, timer: null };

// --- DOM helpers ------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function field(label, control) {
  return el("label", {}, label, control);
}

function select(name, options, value, attrs) {
  const s = el("select", { name, ...(attrs || {}) });
  for (const o of options) {
    const [v, text] = Array.isArray(o) ? o : [o, o || "any"];
    s.append(el("option", { value: v, selected: v === value }, text));
  }
  return s;
}

function main() {
  return document.getElementById("main");
}

function show(...nodes) {
  const m = main();
  m.replaceChildren(...nodes);
}

function banner(message, kind, action) {
  const b = document.getElementById("banner");
  b.className = kind === "info" ? "info" : "";
  b.replaceChildren(message, action || "");
  b.hidden = !message;
}

function when(ts) {
  return ts ? new Date(ts).toLocaleString() : "";
}

function span(seconds) {
  const s = Math.abs(seconds);
  if (s < 3600) return `${Math.round(s / 60)}m`;
  if (s < 86400 * 2) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.round(s / 86400)}d`;
}

// --- the API ----------------------------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, message, etag) {
    super(message);
    this.status = status;
    this.etag = etag;
  }
}

async function api(method, path, body, headers) {
  const init = { method, headers: { Authorization: `Bearer ${session.token}`, ...(headers || {}) } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (r.status === 401) {
    signOut("Your token was refused (expired or revoked): sign in again.");
    throw new ApiFailure(401, "signed out");
  }
  if (!r.ok) {
    const message = (data && data.error) || `HTTP ${r.status}`;
    throw new ApiFailure(r.status, data && data.field ? `${message} (${data.field})` : message, r.headers.get("ETag"));
  }
  return { data, etag: r.headers.get("ETag") };
}

function orgsWith(permission) {
  return Object.entries(session.who.orgs)
    .filter(([oid, perms]) => oid !== "*" && perms.includes(permission))
    .map(([oid]) => oid);
}

function can(permission, oid) {
  const perms = session.who.orgs[oid] || (session.who.operator && session.who.orgs["*"]) || [];
  return perms.includes(permission);
}

// --- sign-in ----------------------------------------------------------------------------------

function signInPage(message) {
  const input = el("textarea", { id: "token", name: "token", required: true, autocomplete: "off", spellcheck: "false" });
  const form = el(
    "form",
    { class: "signin", onsubmit: async (e) => {
      e.preventDefault();
      session.token = input.value.trim();
      try {
        session.who = (await api("GET", "/api/v1/whoami")).data;
      } catch (err) {
        session.token = null;
        banner(`Sign-in failed: ${err.message}`);
        return;
      }
      sessionStorage.setItem(TOKEN, session.token);
      banner("");
      render();
    } },
    el("h1", { text: "Sign in" }),
    el("p", { text: "Paste an API token (it stays in this browser tab's session storage, never in a URL)." }),
    el("label", { for: "token", text: "API token" }),
    input,
    el("p", {}, el("button", { type: "submit", text: "Sign in" })),
  );
  show(form);
  if (message) banner(message);
  input.focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN);
  session.token = null;
  session.who = null;
  header();
  signInPage(message);
}

function header() {
  const who = document.getElementById("who");
  const nav = document.getElementById("nav");
  const out = document.getElementById("sign-out");
  if (!session.who) {
    who.textContent = "";
    nav.hidden = true;
    out.hidden = true;
    return;
  }
  const orgs = Object.entries(session.who.orgs).map(([oid, p]) => `${oid} (${p.join(", ")})`).join("; ");
  who.textContent = `${session.who.subject} — ${orgs}`;
  nav.hidden = false;
  out.hidden = false;
  for (const a of nav.querySelectorAll("a")) {
    const current = a.dataset.nav === page();
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

// --- routing ----------------------------------------------------------------------------------

function page() {
  const p = location.pathname;
  if (p.startsWith("/tickets/")) return "ticket";
  if (p === "/dashboard") return "dashboard";
  if (p === "/reports") return "reports";
  if (p === "/entities") return "entities";
  return "queue";
}

function go(url) {
  history.pushState(null, "", url);
  render();
}

async function render() {
  clearInterval(session.timer);
  if (!session.token) return signInPage();
  if (!session.who) {
    try {
      session.who = (await api("GET", "/api/v1/whoami")).data;
    } catch {
      return;
    }
  }
  header();
  const views = { queue: queuePage, ticket: ticketPage, dashboard: dashboardPage, reports: reportsPage, entities: entitiesPage };
  try {
    await views[page()]();
  } catch (err) {
    if (err instanceof ApiFailure) banner(err.message);
    else throw err;
  }
  main().focus({ preventScroll: true });
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a");
  if (!a || a.protocol !== location.protocol || a.origin !== location.origin || a.target || a.hasAttribute("download")) return;
  if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  banner("");
  go(a.pathname + a.search);
});
window.addEventListener("popstate", render);
document.getElementById("sign-out").addEventListener("click", () => signOut(""));

// --- SLA --------------------------------------------------------------------------------------

function sla(t) {
  const now = Date.now();
  const clock = (label, stoppedAt, due) => {
    if (!due) return null;
    const d = Date.parse(due);
    if (stoppedAt) return Date.parse(stoppedAt) <= d ? null : [`${label} breached`, "breached"];
    if (t.status === "closed" || t.status === "merged") return null;
    return d < now ? [`${label} breached ${span((now - d) / 1000)} ago`, "breached"] : [`${label} due in ${span((d - now) / 1000)}`, "due"];
  };
  const parts = [clock("ack", t.acknowledged_at, t.mtta_due_at), clock("resolve", t.resolved_at, t.mttr_due_at)].filter(Boolean);
  if (!parts.length) return el("span", { class: "met", text: t.status === "merged" ? "" : "within SLA" });
  return el("span", {}, ...parts.map(([text, cls]) => el("span", { class: cls, text: `${text} ` })));
}

// --- the queue --------------------------------------------------------------------------------

const FILTERS = ["status", "severity", "classification", "assignee", "tag", "search", "sort", "order"];

async function queuePage() {
  const q = new URLSearchParams(location.search);
  const readable = orgsWith("investigation.get");
  const oids = q.get("oids") || readable.join(",");
  if (!oids) {
    show(el("p", { text: "This token can read no org's tickets." }));
    return;
  }
  const form = queueFilters(q, oids);
  const list = el("div", { id: "queue" });
  show(el("h1", { text: "Queue" }), form, list);
  await loadQueue(list, q, oids);
  if (!q.get("page_token")) session.timer = setInterval(() => refreshQueue(list, q, oids), POLL_MS);
}

function queueFilters(q, oids) {
  const checks = (name, values) =>
    el("fieldset", {}, el("legend", { text: name }),
      ...values.map((v) => field(v, el("input", { type: "checkbox", name, value: v, checked: (q.get(name) || "").split(",").includes(v) }))));
  const form = el("form", { class: "filters", "aria-label": "Filters", onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const out = new URLSearchParams();
    out.set("oids", f.getAll("oids").join(","));
    for (const name of FILTERS) {
      const v = f.getAll(name).filter(Boolean).join(",");
      if (v) out.set(name, v);
    }
    go(`/?${out}`);
  } });
  const readable = orgsWith("investigation.get");
  const orgPick = readable.length
    ? el("fieldset", {}, el("legend", { text: "org" }),
        ...readable.map((o) => field(o, el("input", { type: "checkbox", name: "oids", value: o, checked: oids.split(",").includes(o) }))))
    : field("orgs", el("input", { name: "oids", value: oids }));
  form.append(
    orgPick,
    checks("status", V.statuses),
    checks("severity", V.severities),
    field("classification", select("classification", ["", ...V.classifications], q.get("classification") || "")),
    field("assignee", el("input", { name: "assignee", value: q.get("assignee") || "", size: 12 })),
    field("tag", el("input", { name: "tag", value: q.get("tag") || "", size: 10 })),
    field("search", el("input", { name: "search", type: "search", value: q.get("search") || "", size: 14 })),
    field("sort", select("sort", V.sorts, q.get("sort") || "created_at")),
    field("order", select("order", ["desc", "asc"], q.get("order") || "desc")),
    el("button", { type: "submit", text: "Apply" }),
  );
  return form;
}

function queueQuery(q, oids) {
  const out = new URLSearchParams({ oids, page_size: "50" });
  for (const name of [...FILTERS, "page_token"]) if (q.get(name)) out.set(name, q.get(name));
  return out;
}

async function refreshQueue(list, q, oids) {
  if (list.querySelector("input[name=pick]:checked")) return; // never pull the rows from under a selection
  await loadQueue(list, q, oids).catch(() => {});
}

async function loadQueue(list, q, oids) {
  const { data } = await api("GET", `/api/v1/tickets?${queueQuery(q, oids)}`);
  const total = Object.values(data.total_counts).reduce((a, b) => a + b, 0);
  const rows = data.tickets.map((t) => {
    const href = `/tickets/${t.ticket_number}?oid=${encodeURIComponent(t.oid)}`;
    return el("tr", {},
      el("td", {}, el("input", { type: "checkbox", name: "pick", value: `${t.oid}\n${t.ticket_number}`, "aria-label": `select ticket ${t.ticket_number}` })),
      el("td", {}, el("a", { href, text: `#${t.ticket_number}` })),
      el("td", { class: `sev-${t.severity}`, text: t.severity }),
      el("td", { text: t.status }),
      el("td", {}, t.summary || t.detection_cat || "", t.detection_count > 1 ? el("span", { class: "muted", text: ` (${t.detection_count} detections)` }) : ""),
      el("td", { text: t.hostname || "" }),
      el("td", { text: t.assignee || "" }),
      el("td", {}, sla(t)),
      el("td", { text: when(t.created_at) }),
      el("td", { class: "muted", text: t.oid }),
    );
  });
  const table = el("table", { "aria-label": "Tickets" },
    el("thead", {}, el("tr", {}, ...["", "#", "severity", "status", "title", "host", "assignee", "SLA", "created", "org"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows));
  const pager = el("div", { class: "pager" }, el("span", { text: `${total} tickets match` }));
  if (q.get("page_token")) {
    const first = new URLSearchParams(location.search);
    first.delete("page_token");
    pager.append(el("a", { href: `/?${first}`, text: "First page" }));
  }
  if (data.next_page_token) {
    const next = new URLSearchParams(location.search);
    next.set("oids", oids);
    next.set("page_token", data.next_page_token);
    pager.append(el("a", { href: `/?${next}`, text: "Next page" }));
  }
  list.replaceChildren(bulkBar(list), pager, data.tickets.length ? table : el("p", { text: "No ticket matches." }));
}

function bulkBar(list) {
  const status = select("bulk-status", ["", ...V.statuses.filter((s) => s !== "merged")], "", { id: "bulk-status" });
  const classification = select("bulk-classification", ["", ...V.classifications], "", { id: "bulk-classification" });
  const assignee = el("input", { id: "bulk-assignee", size: 12 });
  const results = el("ul", { id: "bulk-results", "aria-live": "polite" });
  const apply = async () => {
    const picked = [...list.querySelectorAll("input[name=pick]:checked")].map((c) => c.value.split("\n"));
    if (!picked.length) return banner("Select tickets first.");
    const update = {};
    if (status.value) update.status = status.value;
    if (classification.value) update.classification = classification.value;
    if (assignee.value.trim()) update.assignee = assignee.value.trim();
    const byOrg = {};
    for (const [oid, n] of picked) (byOrg[oid] = byOrg[oid] || []).push(Number(n));
    results.replaceChildren();
    for (const [oid, numbers] of Object.entries(byOrg)) {
      for (let i = 0; i < numbers.length; i += 200) {
        const { data } = await api("POST", "/api/v1/tickets/bulk-update", { oid, ticket_numbers: numbers.slice(i, i + 200), update });
        for (const r of data.results) results.append(el("li", { class: r.status === 200 ? "met" : "breached", text: `#${r.ticket_number}: ${r.status === 200 ? "updated" : r.error}` }));
      }
    }
    banner("Bulk update done: each ticket's result is listed.", "info");
    for (const c of list.querySelectorAll("input[name=pick]:checked")) c.checked = false;
  };
  return el("div", {},
    el("div", { class: "bulk", role: "group", "aria-label": "Bulk update" },
      el("strong", { text: "Selected:" }),
      field("status", status), field("classification", classification), field("assignee", assignee),
      el("button", { type: "button", id: "bulk-apply", onclick: () => apply().catch((e) => banner(e.message)), text: "Apply to selected" })),
    results);
}

// --- one ticket -------------------------------------------------------------------------------

async function ticketPage() {
  const number = location.pathname.split("/")[2];
  const oid = new URLSearchParams(location.search).get("oid") || "";
  const base = `/api/v1/tickets/${encodeURIComponent(number)}`;
  const at = `?oid=${encodeURIComponent(oid)}`;
  const { data, etag } = await api("GET", `${base}${at}&expand=evidence`); // the whole page, one call
  const t = data.ticket;
  const version = (etag || "").replaceAll('"', "");
  const writable = can("investigation.set", oid);
  const reload = () => render();
  const act = async (method, path, body, headers) => {
    try {
      await api(method, path, body, headers);
      banner("");
      await reload();
    } catch (err) {
      if (err.status === 412) {
        banner(`${err.message}. `, "error", el("button", { type: "button", class: "secondary", onclick: () => { banner(""); reload(); }, text: "Reload" }));
      } else banner(err.message);
    }
  };
  const patch = (body) => act("PATCH", base + at, body, { "If-Match": `"${version}"` });
  const fields = el("dl", { class: "fields" },
    ...[
      ["status", t.status], ["severity", t.severity], ["classification", t.classification],
      ["assignee", t.assignee || "—"], ["escalation group", t.escalation_group || "—"],
      ["tags", t.tags.join(", ") || "—"], ["detections", String(t.detection_count)],
      ["category", t.detection_cat || ""], ["host", t.hostname || ""], ["sensor", t.sensor_id || ""],
      ["created", when(t.created_at)], ["acknowledged", when(t.acknowledged_at)], ["resolved", when(t.resolved_at)],
      ["closed", when(t.closed_at)], ["org", t.oid], ["version", version],
    ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]),
    el("dt", { text: "related tickets" }),
    el("dd", { id: "related" }, ...(t.related_ticket_numbers.length ? t.related_ticket_numbers.flatMap((n, i) => [
      i ? ", " : "", el("a", { href: `/tickets/${n}?oid=${encodeURIComponent(t.oid)}`, text: `#${n}` })]) : ["—"])),
    el("dt", { text: "SLA" }), el("dd", {}, sla(t)),
    el("dt", { text: "external ticket" }),
    el("dd", {}, t.external_ticket_url ? el("a", { href: t.external_ticket_url, rel: "noopener noreferrer", target: "_blank", text: t.external_ticket_id || t.external_ticket_url }) : t.external_ticket_id || "—"),
  );
  const summary = el("section", { class: "panel" }, el("h2", { text: "Summary and conclusion" }),
    el("p", { text: t.summary || "No summary yet." }), el("p", { class: "muted", text: t.conclusion || "" }));
  const left = [el("section", { class: "panel" }, el("h2", { text: "Ticket" }), fields), summary];
  if (writable) left.unshift(actions(t, patch, act, base, at));
  show(
    el("h1", {}, `Ticket #${t.ticket_number} `, el("span", { class: `sev-${t.severity}`, text: t.severity }), ` · ${t.status}`),
    el("div", { class: "grid" },
      el("div", {}, ...left),
      el("div", {},
        notesPanel(data.events, writable, act, base, at),
        detectionsPanel(data.detections, t, writable, act, base, at),
        entitiesPanel(data.entities, writable, act, base, at, oid),
        telemetryPanel(data.telemetry),
        artifactsPanel(data.artifacts, writable, act, base, at))),
    timelinePanel(data.events),
  );
}

function actions(t, patch, act, base, at) {
  const moves = (V.transitions[t.status] || []).filter((s) => s !== "merged");
  const classify = select("classification", V.classifications, t.classification, { id: "classify" });
  const assignee = el("input", { id: "assignee", value: t.assignee || "", size: 16 });
  const group = el("input", { id: "escalation-group", value: t.escalation_group || "", size: 16 });
  const tags = el("input", { id: "tags", value: t.tags.join(", "), size: 24 });
  const summary = el("textarea", { id: "summary" }, t.summary || "");
  const conclusion = el("textarea", { id: "conclusion" }, t.conclusion || "");
  const merge = el("input", { id: "merge-sources", size: 14, placeholder: "e.g. 12, 15" });
  const closing = el("select", { id: "resolve-as" },
    ...V.classifications.map((c) => el("option", { value: c, selected: c === t.classification }, c)));
  const terminal = !moves.length;
  return el("section", { class: "panel", "aria-label": "Actions" },
    el("h2", { text: "Actions" }),
    el("div", { class: "actions", role: "group", "aria-label": "Move to" },
      ...moves.map((s) => el("button", { type: "button", "data-status": s, onclick: () => {
        const body = { status: s };
        if ((s === "resolved" || s === "closed") && closing.value !== t.classification) body.classification = closing.value;
        patch(body);
      }, text: `Move to ${s}` })),
      moves.some((s) => s === "resolved" || s === "closed") ? field("classified as", closing) : ""),
    terminal ? el("p", { class: "muted", text: `The ticket is ${t.status}: no further moves.` }) : "",
    el("div", { class: "actions" }, field("classification", classify),
      el("button", { type: "button", id: "save-classification", onclick: () => patch({ classification: classify.value }), text: "Classify" })),
    el("div", { class: "actions" }, field("assignee", assignee),
      el("button", { type: "button", id: "save-assignee", onclick: () => patch({ assignee: assignee.value.trim() || null }), text: "Assign" })),
    el("div", { class: "actions" }, field("escalation group", group),
      el("button", { type: "button", id: "save-group", onclick: () => patch({ escalation_group: group.value.trim() || null }), text: "Set group" })),
    el("div", { class: "actions" }, field("tags", tags),
      el("button", { type: "button", id: "save-tags", onclick: () => patch({ tags: tags.value.split(",").map((x) => x.trim()).filter(Boolean) }), text: "Set tags" })),
    el("label", { for: "summary", text: "summary" }), summary,
    el("label", { for: "conclusion", text: "conclusion" }), conclusion,
    el("div", { class: "actions" },
      el("button", { type: "button", id: "save-texts", onclick: () => patch({ summary: summary.value || null, conclusion: conclusion.value || null }), text: "Save summary and conclusion" })),
    el("div", { class: "actions" }, field("merge tickets into this one", merge),
      el("button", { type: "button", id: "merge", onclick: () => act("POST", "/api/v1/tickets/merge", {
        oid: t.oid, target_ticket_number: t.ticket_number,
        source_ticket_numbers: merge.value.split(/[ ,]+/).filter(Boolean).map(Number) }), text: "Merge" })),
  );
}

function notesPanel(events, writable, act, base, at) {
  const notes = events.filter((e) => e.type === "note_added");
  const byType = {};
  for (const n of notes) (byType[n.metadata.note_type] = byType[n.metadata.note_type] || []).push(n);
  const panel = el("section", { class: "panel", id: "notes" }, el("h2", { text: `Notes (${notes.length})` }));
  for (const type of V.note_types) {
    if (!byType[type]) continue;
    panel.append(el("h3", { text: type }), ...byType[type].map((n) =>
      el("div", { class: "note" }, el("div", { class: "muted", text: `${n.by} · ${when(n.ts)}` }), n.metadata.content)));
  }
  if (writable) {
    const content = el("textarea", { id: "note-content", required: true });
    const type = select("note_type", V.note_types, "general", { id: "note-type" });
    panel.append(el("form", { onsubmit: (e) => {
      e.preventDefault();
      act("POST", `${base}/notes${at}`, { content: content.value, note_type: type.value });
    } }, el("label", { for: "note-content", text: "new note" }), content, field("type", type), el("button", { type: "submit", text: "Add note" })));
  }
  return panel;
}

// Why a detection is on its ticket: the grouping rule, its key's values and the window.
function groupedBy(g) {
  if (!g) return "—";
  const key = Object.entries(g.key).map(([k, v]) => `${k}=${v}`).join(", ");
  const span = g.max_span_minutes ? `, up to ${g.max_span_minutes} min` : "";
  return `${g.rule}: ${key} (${g.window || "fixed"} ${g.window_minutes} min${span})`;
}

function detectionsPanel(detections, t, writable, act, base, at) {
  const split = el("input", { id: "split-ids", size: 24, placeholder: "detection ids, comma-separated" });
  return el("section", { class: "panel", id: "detections" },
    el("h2", { text: `Detections (${t.detection_count})` }),
    el("table", {}, el("thead", {}, el("tr", {}, ...["id", "category", "source", "priority", "host", "detected", "grouped by"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, detections.slice(0, 200).map((d) => el("tr", {},
        el("td", { text: d.detection_id }), el("td", { text: d.detection_cat }), el("td", { text: d.detection_source }),
        el("td", { text: String(d.detection_priority) }), el("td", { text: d.hostname }), el("td", { text: when(d.detected_at) }),
        el("td", { class: "grouping", text: groupedBy(d.grouping) }))))),
    detections.length > 200 ? el("p", { class: "muted", text: `The first 200 of ${detections.length} are shown.` }) : "",
    writable && t.status !== "merged" && t.detection_count > 1 ? el("div", { class: "actions" }, field("split off into a new ticket", split),
      el("button", { type: "button", id: "split", onclick: () => act("POST", `${base}/split${at}`,
        { detection_ids: split.value.split(/[ ,]+/).filter(Boolean) }), text: "Split" })) : "");
}

function entitiesPanel(entities, writable, act, base, at, oid) {
  const panel = el("section", { class: "panel", id: "entities" }, el("h2", { text: `Entities (${entities.length})` }),
    el("table", {}, el("tbody", {}, entities.map((e) => el("tr", {},
      el("td", { text: e.entity_type }),
      el("td", {}, el("a", { href: `/entities?oids=${encodeURIComponent(oid)}&entity_type=${encodeURIComponent(e.entity_type)}&entity_value=${encodeURIComponent(e.entity_value)}`, title: "tickets holding this indicator", text: e.entity_value })),
      el("td", { text: e.verdict }))))));
  if (writable) {
    const type = select("entity_type", V.entity_types, "ip", { id: "entity-type" });
    const value = el("input", { id: "entity-value", required: true, size: 22 });
    const verdict = select("verdict", V.verdicts, "unknown", { id: "entity-verdict" });
    panel.append(el("form", { class: "actions", onsubmit: (e) => {
      e.preventDefault();
      act("POST", `${base}/entities${at}`, { entity_type: type.value, entity_value: value.value.trim(), verdict: verdict.value });
    } }, field("type", type), field("value", value), field("verdict", verdict), el("button", { type: "submit", text: "Add entity" })));
  }
  return panel;
}

function telemetryPanel(items) {
  return el("section", { class: "panel", id: "telemetry" }, el("h2", { text: `Telemetry (${items.length})` }),
    el("ul", {}, items.map((x) => el("li", { text: `${x.event_type || "event"} ${x.atom} on ${x.sid}: ${x.event_summary || ""} ${x.verdict ? `(${x.verdict})` : ""}` }))));
}

function artifactsPanel(items, writable, act, base, at) {
  const panel = el("section", { class: "panel", id: "artifacts" }, el("h2", { text: `Artifacts (${items.length})` }),
    el("ul", {}, items.map((a) => el("li", { text: `${a.artifact_type}: ${a.description || ""} ${a.url || a.path || a.hash || ""}` }))));
  if (writable) {
    const type = el("input", { id: "artifact-type", required: true, size: 10, value: "pcap" });
    const description = el("input", { id: "artifact-description", size: 20 });
    const url = el("input", { id: "artifact-url", size: 24, type: "url" });
    panel.append(el("form", { class: "actions", onsubmit: (e) => {
      e.preventDefault();
      act("POST", `${base}/artifacts${at}`, { artifact_type: type.value, description: description.value || null, url: url.value || null });
    } }, field("type", type), field("description", description), field("url", url), el("button", { type: "submit", text: "Add artifact" })));
  }
  return panel;
}

function describe(e) {
  const m = e.metadata || {};
  switch (e.type) {
    case "status_changed": return `${m.from_status} → ${m.to_status}`;
    case "assigned": return `${m.old_assignee || "nobody"} → ${m.assignee || "nobody"}`;
    case "classified": return `${m.old_classification} → ${m.classification}`;
    case "note_added": return `${m.note_type}: ${String(m.content).slice(0, 80)}`;
    case "detection_added": return m.detection ? m.detection.detection_id : "";
    case "merged_into": return `into #${m.target_ticket_number}`;
    case "merged_from": return `#${m.source_ticket_number}`;
    case "entity_added": return m.entity ? `${m.entity.entity_type} ${m.entity.entity_value}` : "";
    case "tags_updated": return (m.tags || []).join(", ");
    case "sla_breached": return `${m.kind} (${m.target_minutes} min)`;
    default: return "";
  }
}

function timelinePanel(events) {
  return el("section", { class: "panel", id: "timeline" }, el("h2", { text: `Timeline (${events.length} events)` }),
    el("table", { class: "timeline" },
      el("thead", {}, el("tr", {}, ...["when", "who", "what", ""].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, events.map((e) => el("tr", {}, el("td", { text: when(e.ts) }), el("td", { text: e.by || "" }), el("td", { text: e.type }), el("td", { text: describe(e) }))))));
}

// --- cross-ticket indicator search ------------------------------------------------------------

async function entitiesPage() {
  const q = new URLSearchParams(location.search);
  const { data } = await api("GET", `/api/v1/entities/search?${q}`);
  show(el("h1", { text: `Tickets holding ${q.get("entity_type")} ${q.get("entity_value")}` }),
    el("ul", {}, data.tickets.map((m) => el("li", {},
      el("a", { href: `/tickets/${m.ticket_number}?oid=${encodeURIComponent(m.oid)}`, text: `#${m.ticket_number}` }),
      ` ${m.status}, ${m.severity}, verdict ${m.entity.verdict} (${m.oid})`))));
}

// --- dashboard and reports --------------------------------------------------------------------

function bars(title, values, format) {
  const entries = Object.entries(values);
  const max = Math.max(1, ...entries.map(([, v]) => v || 0));
  const row = 24;
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  const shown = (v) => (v === null || v === undefined ? "—" : format ? format(v) : String(v));
  svg.setAttribute("aria-label", `${title}: ${entries.map(([k, v]) => `${k} ${shown(v)}`).join(", ")}`);
  svg.setAttribute("width", "520");
  svg.setAttribute("height", String(row * entries.length + 8));
  entries.forEach(([k, v], i) => {
    const y = i * row + 4;
    const label = document.createElementNS(svgNs, "text");
    label.setAttribute("x", "0");
    label.setAttribute("y", String(y + 15));
    label.textContent = k;
    const bar = document.createElementNS(svgNs, "rect");
    bar.setAttribute("x", "140");
    bar.setAttribute("y", String(y));
    bar.setAttribute("height", "18");
    bar.setAttribute("width", String(Math.max(1, (300 * (v || 0)) / max)));
    bar.setAttribute("fill", "#0b57d0");
    const value = document.createElementNS(svgNs, "text");
    value.setAttribute("x", String(146 + (300 * (v || 0)) / max));
    value.setAttribute("y", String(y + 15));
    value.textContent = shown(v);
    svg.append(label, bar, value);
  });
  return el("figure", { class: "panel" }, el("figcaption", { text: title }), svg);
}

function orgsParam() {
  return new URLSearchParams(location.search).get("oids") || orgsWith("investigation.get").join(",");
}

async function dashboardPage() {
  await drawDashboard();
  session.timer = setInterval(() => page() === "dashboard" && drawDashboard().catch(() => {}), POLL_MS * 3);
}

async function drawDashboard() {
  const oids = orgsParam();
  const { data } = await api("GET", `/api/v1/dashboard/counts?oids=${encodeURIComponent(oids)}`);
  const t = data.total;
  const card = (label, n, cls) => el("div", { class: "card" }, el("div", { class: `n ${cls || ""}`, text: String(n) }), el("div", { text: label }));
  const perOrg = el("table", { "aria-label": "Per org" },
    el("thead", {}, el("tr", {}, ...["org", "tickets", ...V.statuses, "MTTA breaches", "MTTR breaches"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, Object.entries(data.orgs).map(([oid, c]) => el("tr", {},
      el("td", { text: oid }), el("td", { text: String(c.total) }), ...V.statuses.map((s) => el("td", { text: String(c.by_status[s] || 0) })),
      el("td", { text: String(c.sla_breaches.mtta) }), el("td", { text: String(c.sla_breaches.mttr) })))));
  show(el("h1", { text: "Dashboard" }),
    el("div", { class: "cards" }, card("tickets", t.total), card("new", t.by_status.new || 0),
      card("open MTTA breaches", t.sla_breaches.mtta, "breached"), card("open MTTR breaches", t.sla_breaches.mttr, "breached")),
    el("div", { class: "grid" },
      bars("Tickets by status", Object.fromEntries(V.statuses.map((s) => [s, t.by_status[s] || 0]))),
      bars("Tickets by severity", Object.fromEntries(V.severities.map((s) => [s, t.by_severity[s] || 0])))),
    el("h2", { text: "Per org" }), perOrg,
    el("h2", { text: "Active suppressions" }), await suppressionsTable(oids.split(",").filter(Boolean)));
}

// What each active suppression matches and what it has held (kept and counted, no ticket).
async function suppressionsTable(oids) {
  const rows = [];
  for (const oid of oids) {
    const { data } = await api("GET", `/api/v1/suppressions?oid=${encodeURIComponent(oid)}`);
    rows.push(...data.suppressions.filter((x) => x.active));
  }
  if (!rows.length) return el("p", { class: "muted", id: "suppressions", text: "No suppression is active." });
  const match = (x) => [`category ${x.match.category}`, `source ${x.match.source}`, `priority ${x.match.priority_min}–${x.match.priority_max}`,
    ...Object.entries(x.key_values).map(([k, v]) => `${k}=${v}`), x.include_critical ? "critical too" : ""].filter(Boolean).join(", ");
  return el("table", { id: "suppressions", "aria-label": "Active suppressions" },
    el("thead", {}, el("tr", {}, ...["org", "matches", "reason", "by", "expires", "held", "last held"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows.map((x) => el("tr", {},
      el("td", { text: x.oid }), el("td", { text: match(x) }), el("td", { text: x.reason }), el("td", { text: x.created_by || "" }),
      el("td", { text: when(x.expires_at) }), el("td", { class: "held", text: String(x.held) }),
      el("td", { text: x.last_held_at ? `${x.last_detection_id} · ${when(x.last_held_at)}` : "—" })))));
}

const minutes = (s) => (s === null || s === undefined ? "—" : `${(s / 60).toFixed(1)} min`);
const pct = (p) => (p === null || p === undefined ? "—" : `${p.toFixed(1)}%`);

function metricsRow(name, m) {
  return [name, m.total, minutes(m.mtta.mean_s), minutes(m.mtta.median_s), minutes(m.mtta.p90_s), pct(m.mtta.sla_compliance_pct),
    minutes(m.mttr.mean_s), minutes(m.mttr.median_s), minutes(m.mttr.p90_s), pct(m.mttr.sla_compliance_pct),
    pct(m.true_positive_rate_pct), pct(m.false_positive_rate_pct), pct(m.escalation_rate_pct)];
}

const REPORT_COLUMNS = ["group", "tickets", "MTTA mean", "MTTA median", "MTTA p90", "MTTA SLA", "MTTR mean", "MTTR median",
  "MTTR p90", "MTTR SLA", "TP rate", "FP rate", "escalation rate"];

async function reportsPage() {
  const q = new URLSearchParams(location.search);
  const day = 86400000;
  const from = q.get("from") || new Date(Date.now() - 30 * day).toISOString().slice(0, 10);
  const to = q.get("to") || new Date(Date.now() + day).toISOString().slice(0, 10);
  const groupBy = q.get("group_by") || "";
  const oids = orgsParam();
  const form = el("form", { class: "filters", "aria-label": "Report period", onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const out = new URLSearchParams({ oids, from: f.get("from"), to: f.get("to") });
    if (f.get("group_by")) out.set("group_by", f.get("group_by"));
    go(`/reports?${out}`);
  } },
  field("from", el("input", { type: "date", name: "from", value: from, required: true })),
  field("to", el("input", { type: "date", name: "to", value: to, required: true })),
  field("group by", select("group_by", [["", "nothing"], ...V.group_by.map((g) => [g, g])], groupBy)),
  el("button", { type: "submit", text: "Show" }));
  const results = el("div", { id: "report" });
  show(el("h1", { text: "Reports" }), form, results);
  const params = new URLSearchParams({ oids, from: `${from}T00:00:00Z`, to: `${to}T00:00:00Z` });
  if (groupBy) params.set("group_by", groupBy);
  const { data } = await api("GET", `/api/v1/reports/summary?${params}`);
  const a = data.aggregate;
  const rows = [metricsRow("all", a)];
  for (const [name, m] of Object.entries(a.groups || {})) rows.push(metricsRow(name, m));
  for (const [oid, m] of Object.entries(data.orgs)) rows.push(metricsRow(`org ${oid}`, m));
  const csv = [REPORT_COLUMNS, ...rows].map((r) => r.map((c) => `"${String(c).replaceAll('"', '""')}"`).join(",")).join("\n");
  const download = el("a", { href: URL.createObjectURL(new Blob([csv], { type: "text/csv" })), download: `report-${from}-${to}.csv`, id: "csv", text: "Download CSV" });
  const groups = a.groups || {};
  results.replaceChildren(
    el("p", {}, `${from} to ${to}: ${a.total} tickets. `, download),
    el("div", { class: "grid" },
      bars("MTTA (minutes): mean, median, p90", { mean: a.mtta.mean_s, median: a.mtta.median_s, p90: a.mtta.p90_s }, (s) => (s / 60).toFixed(1)),
      bars("MTTR (minutes): mean, median, p90", { mean: a.mttr.mean_s, median: a.mttr.median_s, p90: a.mttr.p90_s }, (s) => (s / 60).toFixed(1)),
      bars("SLA compliance and rates (%)", { "MTTA SLA": a.mtta.sla_compliance_pct, "MTTR SLA": a.mttr.sla_compliance_pct,
        "true positive": a.true_positive_rate_pct, "false positive": a.false_positive_rate_pct, escalation: a.escalation_rate_pct }, (p) => p.toFixed(1)),
      Object.keys(groups).length ? bars(`Mean MTTR by ${groupBy} (minutes)`, Object.fromEntries(Object.entries(groups).map(([g, m]) => [g, m.mttr.mean_s])), (s) => (s / 60).toFixed(1)) : ""),
    el("table", { "aria-label": "Report" }, el("thead", {}, el("tr", {}, ...REPORT_COLUMNS.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows.map((r) => el("tr", {}, ...r.map((c) => el("td", { text: String(c) })))))),
    await rulesReport(params, from, to));
}

const RULE_COLUMNS = ["org", "category", "source", "detections", "tickets", "grouped", "suppressed", "TP", "FP", "FP rate",
  "median MTTR", "needs tuning"];

// The rule health report: which detection rules make the noise, over the same period.
async function rulesReport(params, from, to) {
  const q = new URLSearchParams({ oids: params.get("oids"), from: params.get("from"), to: params.get("to") });
  const { data } = await api("GET", `/api/v1/reports/rules?${q}`);
  const share = (x) => (x === null || x === undefined ? "—" : `${(x * 100).toFixed(1)}%`);
  const rows = data.rules.map((r) => [r.oid, r.category, r.source, r.detections, r.tickets, share(r.grouped_share), r.suppressed,
    r.true_positives, r.false_positives, share(r.false_positive_rate), minutes(r.median_mttr_seconds), r.needs_tuning ? "yes" : "no"]);
  const csv = [RULE_COLUMNS, ...rows].map((r) => r.map((c) => `"${String(c).replaceAll('"', '""')}"`).join(",")).join("\n");
  const download = el("a", { href: URL.createObjectURL(new Blob([csv], { type: "text/csv" })), download: `rules-${from}-${to}.csv`, id: "rules-csv", text: "Download the rule report (CSV)" });
  return el("section", { id: "rules" }, el("h2", { text: "Rule health" }),
    el("p", {}, `${data.rules.length} detection rules. `, download),
    el("table", { "aria-label": "Rule health" }, el("thead", {}, el("tr", {}, ...RULE_COLUMNS.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows.map((r, i) => el("tr", { class: data.rules[i].needs_tuning ? "needs-tuning" : "" }, ...r.map((c) => el("td", { text: String(c) })))))));
}

render();
