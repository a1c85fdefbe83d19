// The analysts' console. Plain DOM, no framework, no third-party code: every datum comes from the
// public API with the analyst's own token, and is written into the page as text, never as HTML.
"use strict";

const V = JSON.parse(document.getElementById("vocabulary").textContent);
const TOKEN = "ticketing.token";
const POLL_MS = 10000;
const session = { token: sessionStorage.getItem(TOKEN), who: null, timer: null, live: null };

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

// A token goes in the Authorization header; a single sign-on session rides on its HttpOnly cookie,
// and each of its writes carries the session's CSRF token.
function authHeaders(method = "GET") {
  if (session.token) return { Authorization: `Bearer ${session.token}` };
  if (method !== "GET" && session.who && session.who.csrf_token) return { "X-CSRF-Token": session.who.csrf_token };
  return {};
}

async function api(method, path, body, headers) {
  const init = { method, headers: { ...authHeaders(method), ...(headers || {}) } };
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
    signOut(session.token ? "Your token was refused (expired or revoked): sign in again." : "Your session has ended: sign in again.");
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

// What people call an org (its `org_name`), else its id.
function orgName(oid) {
  return (session.who && session.who.org_names && session.who.org_names[oid]) || oid;
}

function can(permission, oid) {
  const perms = session.who.orgs[oid] || (session.who.operator && session.who.orgs["*"]) || [];
  return perms.includes(permission);
}

// --- sign-in ----------------------------------------------------------------------------------

function signInPage(message) {
  const input = el("textarea", { id: "token", name: "token", required: true, autocomplete: "off", spellcheck: "false" });
  // single sign-on, when the service has an identity provider: back to this page once signed in
  const back = location.pathname + location.search;
  const sso = el("p", { hidden: true },
    el("button", { type: "button", id: "sso", text: "Sign in with single sign-on",
                   onclick: () => location.assign(`/auth/login?return_to=${encodeURIComponent(back)}`) }),
    el("span", { class: "muted", text: " or" }));
  fetch("/auth/methods").then((r) => r.json()).then((m) => { sso.hidden = !m.oidc; }).catch(() => {});
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
    sso,
    el("p", { text: "Paste an API token (it stays in this browser tab's session storage, never in a URL)." }),
    el("label", { for: "token", text: "API token" }),
    input,
    el("p", {}, el("button", { type: "submit", text: "Sign in" })),
  );
  show(form);
  if (message) banner(message);
  input.focus();
}

// The sign-out button: a session ends at the service (every API process refuses its cookie from
// then on) and, where the provider offers it, at the provider too; a token is forgotten here.
async function signOutEverywhere() {
  if (!session.token && session.who && session.who.csrf_token) {
    stopLive();
    try {
      const r = await fetch("/auth/logout", { method: "POST", headers: { "X-CSRF-Token": session.who.csrf_token } });
      const out = await r.json();
      if (out.end_session_url) return location.assign(out.end_session_url);
    } catch {
      // signed out here whatever the answer: the page forgets the session below
    }
  }
  signOut("");
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN);
  session.token = null;
  session.who = null;
  header();
  signInPage(message);
}

// Signed in, but no group of the user's has a role in any org: say so, rather than an empty console.
function noAccessPage() {
  document.getElementById("nav").hidden = true;
  show(el("section", { id: "no-access", class: "panel" },
    el("h1", { text: "No access" }),
    el("p", { text: `You are signed in as ${session.who.subject}, but none of your groups has a role in any org of this service.` }),
    el("p", { text: "Ask an org admin to map one of your groups to a role (role_mappings in the org's configuration). It applies from your next request: reload this page then." })));
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
  const orgs = Object.entries(session.who.orgs).map(([oid, p]) => `${orgName(oid)} (${p.join(", ")})`).join("; ");
  who.textContent = `${session.who.subject} — ${orgs}`;
  nav.hidden = false;
  out.hidden = false;
  document.getElementById("nav-admin").hidden = !orgsWith("org.conf.get").length;
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
  if (p === "/admin") return "admin";
  return "queue";
}

function go(url) {
  history.pushState(null, "", url);
  render();
}

async function render() {
  clearInterval(session.timer);
  stopLive();
  if (!session.token && !session.who) {
    const r = await fetch("/api/v1/whoami"); // a single sign-on session, if this browser has one
    if (!r.ok) return signInPage();
    session.who = await r.json();
  }
  if (!session.who) {
    try {
      session.who = (await api("GET", "/api/v1/whoami")).data;
    } catch {
      return;
    }
  }
  header();
  if (!Object.keys(session.who.orgs).length) return noAccessPage();
  const views = { queue: queuePage, ticket: ticketPage, dashboard: dashboardPage, reports: reportsPage, entities: entitiesPage, admin: adminPage };
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
document.getElementById("sign-out").addEventListener("click", () => signOutEverywhere());

// --- keyboard ---------------------------------------------------------------------------------

const KEYS = [
  ["j", "next ticket in the queue"], ["k", "previous ticket in the queue"], ["o", "open the current ticket"],
  ["a", "acknowledge"], ["e", "escalate"], ["r", "resolve"], ["c", "classify"],
  ["/", "search the queue"], ["?", "show these keys"], ["Esc", "leave a field, close this help"],
];

function keyHelp() {
  const old = document.getElementById("keys");
  if (old) return old.close();
  const dialog = el("dialog", { id: "keys", "aria-label": "Keyboard shortcuts" },
    el("h2", { text: "Keyboard shortcuts" }),
    el("table", {}, el("tbody", {}, KEYS.map(([k, what]) => el("tr", {}, el("th", { scope: "row" }, el("kbd", { text: k })), el("td", { text: what }))))),
    el("button", { type: "button", text: "Close", onclick: () => dialog.close() }));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

// The queue's current row (j/k), shown and focused on its link.
function moveCursor(step) {
  const rows = [...document.querySelectorAll("#queue tbody tr")];
  if (!rows.length) return;
  const at = rows.findIndex((r) => r.classList.contains("current"));
  const next = rows[Math.min(rows.length - 1, Math.max(0, at < 0 ? 0 : at + step))];
  for (const r of rows) r.classList.remove("current");
  next.classList.add("current");
  next.querySelector("a").focus();
}

function currentRow() {
  return document.querySelector("#queue tbody tr.current") || (document.activeElement && document.activeElement.closest && document.activeElement.closest("#queue tbody tr"));
}

// a, e, r: on a ticket page its own "Move to" button; in the queue the current row's ticket.
async function move(status) {
  if (page() === "ticket") {
    const button = document.querySelector(`button[data-status="${status}"]`);
    if (button) button.click();
    else banner(`This ticket cannot move to ${status} from here.`);
    return;
  }
  const row = currentRow();
  if (!row) return banner("Pick a ticket first (j and k).");
  const [oid, n] = row.dataset.key.split("\n");
  if (!can("investigation.set", oid)) return banner("This token may not change that ticket.");
  try {
    await api("PATCH", `/api/v1/tickets/${n}?oid=${encodeURIComponent(oid)}`, { status });
    banner(`#${n} moved to ${status}.`, "info");
  } catch (err) {
    banner(err.message);
  }
}

const SHORTCUTS = {
  j: () => page() === "queue" && moveCursor(1),
  k: () => page() === "queue" && moveCursor(-1),
  o: () => { const row = currentRow(); if (row) row.querySelector("a").click(); },
  a: () => move("acknowledged"),
  e: () => move("escalated"),
  r: () => move("resolved"),
  c: () => { const c = document.getElementById("classify") || document.getElementById("bulk-classification"); if (c) c.focus(); },
  "/": () => { const f = document.querySelector("input[name=search]"); if (f) f.focus(); else go("/"); },
  "?": keyHelp,
};

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || !session.who) return;
  const t = e.target;
  if (t && (/^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName) || t.isContentEditable)) {
    if (e.key === "Escape") t.blur();
    return;
  }
  const run = SHORTCUTS[e.key];
  if (!run || document.getElementById("keys")) return;
  e.preventDefault();
  run();
});

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

// --- live updates: GET /api/v1/stream, read with fetch so that it carries the token ------------

function stopLive() {
  if (session.live) session.live.abort();
  session.live = null;
  document.body.dataset.live = "off";
}

// Follows the stream of these orgs' ticket events, resuming after the last one received when the
// connection drops (Last-Event-ID: nothing missed, nothing twice); `onEvents` gets them in small
// batches, or `null` when the stream was reset and the view must load again.
function live(oids, onEvents) {
  stopLive();
  const controller = new AbortController();
  session.live = controller;
  let last = null;
  let pending = [];
  let timer = null;
  let delivered = 0;
  // the first event after a quiet spell goes at once (it is in the read model already: the stream
  // follows the projection); a flood is taken in batches, at most four a second
  const deliver = () => {
    timer = null;
    delivered = Date.now();
    const batch = pending;
    pending = [];
    if (!controller.signal.aborted) onEvents(batch); // never into a view that was left
  };
  const take = (block) => {
    const f = { data: [] };
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(":")) continue;
      const at = line.indexOf(":");
      const name = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
      if (name === "data") f.data.push(value);
      else f[name] = value;
    }
    if (f.event === "ticket") {
      last = f.id;
      pending.push(JSON.parse(f.data.join("\n")));
      if (!timer) timer = setTimeout(deliver, Math.max(0, delivered + 250 - Date.now()));
    } else if (f.event === "reset") {
      last = null;
      if (!controller.signal.aborted) onEvents(null);
      return false;
    }
    return true;
  };
  (async () => {
    while (!controller.signal.aborted) {
      try {
        const headers = { ...authHeaders(), Accept: "text/event-stream" };
        if (last !== null) headers["Last-Event-ID"] = last;
        const r = await fetch(`/api/v1/stream?oids=${encodeURIComponent(oids)}`, { headers, signal: controller.signal });
        if (r.status === 401) return signOut("Your token was refused (expired or revoked): sign in again.");
        if (r.status === 410) {
          last = null;
          if (!controller.signal.aborted) onEvents(null);
          continue;
        }
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        document.body.dataset.live = "on";
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        let going = true;
        while (going) {
          const { value, done } = await reader.read();
          if (done) break;
          // one split per chunk (a chunk holds a whole batch of events): linear in its length
          const blocks = (buffer + value).split(/\r?\n\r?\n/);
          buffer = blocks.pop();
          for (const block of blocks) if (!(going = take(block))) break;
        }
        reader.cancel().catch(() => {});
      } catch {
        if (controller.signal.aborted) return;
      }
      document.body.dataset.live = "reconnecting";
      await new Promise((done) => setTimeout(done, 1000));
    }
  })();
}

// --- the org admin's pages (org.conf.get to read, org.conf.set to change) -----------------------

// The configuration in sections, each edited as the JSON of its keys (a reader sees them read-only).
const CONFIG_SECTIONS = [
  ["Org", ["org_name", "ticket_key_prefix"]],
  ["Severity and SLA", ["severity_mapping", "sla_config", "sla_at_risk_percent"]],
  ["Grouping", ["auto_grouping_enabled", "grouping_window_minutes", "grouping_max_detections", "grouping_key_fields", "grouping_rules", "recurrence", "rule_tuning"]],
  ["Retention and auto-close", ["retention_days", "auto_close_resolved_after_days"]],
  ["Routing", ["routing"]],
  ["Notifications", ["notifications"]],
  ["Escalation policies", ["escalation_policies"]],
  ["Task templates", ["task_templates", "max_tasks_per_ticket"]],
  ["Access (single sign-on)", ["role_mappings"]],
  ["Webhook and integrations", ["webhook_url", "external_ticket_url_template", "extrahop"]],
  ["Limits", ["max_notes_per_ticket", "max_entities_per_ticket", "max_artifacts_per_ticket"]],
];

// What GET shows of a secret (a fingerprint) is not what PUT takes (the secret itself, or nothing
// to keep it): fingerprints are taken out of what is sent.
function withoutFingerprints(value) {
  if (Array.isArray(value)) return value.map(withoutFingerprints);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value)
      .filter(([k]) => k !== "url_fingerprint" && k !== "api_key_fingerprint")
      .map(([k, v]) => [k, withoutFingerprints(v)]));
  }
  return value;
}

async function adminPage() {
  const admins = orgsWith("org.conf.get");
  const q = new URLSearchParams(location.search);
  const oid = q.get("oid") || admins[0];
  if (!oid) {
    show(el("h1", { text: "Administration" }), el("p", { text: "This token may not read any org's configuration." }));
    return;
  }
  const writable = can("org.conf.set", oid);
  const at = encodeURIComponent(oid);
  const pick = el("form", { class: "filters", "aria-label": "Org", onsubmit: (e) => {
    e.preventDefault();
    go(`/admin?oid=${encodeURIComponent(new FormData(pick).get("oid"))}`);
  } }, field("org", select("oid", admins.map((o) => [o, orgName(o)]), oid)), el("button", { type: "submit", text: "Show" }));
  const { data: config } = await api("GET", `/api/v1/config/${at}`);
  const sections = CONFIG_SECTIONS.map(([title, keys]) => {
    const id = `config-${title.toLowerCase().replace(/[^a-z]+/g, "-")}`;
    const text = el("textarea", { id, rows: Math.min(18, 3 + JSON.stringify(Object.fromEntries(keys.map((k) => [k, config[k]])), null, 2).split("\n").length),
      readonly: !writable, spellcheck: "false", class: "json" },
      JSON.stringify(Object.fromEntries(keys.map((k) => [k, config[k] === undefined ? null : config[k]])), null, 2));
    const save = async () => {
      let patch;
      try {
        patch = JSON.parse(text.value);
      } catch (err) {
        return banner(`${title}: not valid JSON (${err.message})`);
      }
      if (!patch || typeof patch !== "object" || Array.isArray(patch)) return banner(`${title}: an object of keys is expected`);
      try {
        await api("PUT", `/api/v1/config/${at}`, withoutFingerprints(patch));
        await drawAdminConfig(sections, oid); // what the service holds now, before saying it is saved
        banner(`${title} saved.`, "info");
      } catch (err) {
        banner(`${title}: ${err.message}`);
      }
    };
    return el("section", { class: "panel", "aria-label": title },
      el("h2", { text: title }),
      el("label", { for: id, text: `${title} (JSON)` }), text,
      writable ? el("div", { class: "actions" }, el("button", { type: "button", "data-save": title, onclick: save, text: `Save ${title.toLowerCase()}` })) : "");
  });
  show(el("h1", { text: `Administration · ${orgName(oid)}` }), pick,
    writable ? "" : el("p", { class: "muted", text: "Read-only: this token may read the configuration, not change it." }),
    el("div", { class: "grid" }, el("div", {}, ...sections.slice(0, 5)), el("div", {}, ...sections.slice(5))),
    await deliveriesPanel(at),
    await signingPanel(at, writable),
    writable ? await credentialsPanel(oid) : "");
}

// After a save, every section shows what the service holds now (a fingerprint for a new secret).
async function drawAdminConfig(sections, oid) {
  const { data: config } = await api("GET", `/api/v1/config/${encodeURIComponent(oid)}`);
  for (const [i, [, keys]] of CONFIG_SECTIONS.entries()) {
    sections[i].querySelector("textarea").value = JSON.stringify(Object.fromEntries(keys.map((k) => [k, config[k] === undefined ? null : config[k]])), null, 2);
  }
}

async function deliveriesPanel(at) {
  const rows = [];
  for (const [name, path] of [["webhook", "webhook"], ["ExtraHop", "extrahop"], ["notifications", "notifications"]]) {
    const { data: d } = await api("GET", `/api/v1/config/${at}/${path}`);
    rows.push(el("tr", {}, el("th", { scope: "row", text: name }), el("td", { text: String(d.waiting) }),
      el("td", { text: d.last_error || "—" }), el("td", { text: when(d.first_failed_at) || "—" }), el("td", { text: String(d.refused) })));
  }
  return el("section", { class: "panel", "aria-label": "Deliveries" }, el("h2", { text: "Deliveries" }),
    el("table", { "aria-label": "Deliveries" }, el("thead", {}, el("tr", {}, ...["", "waiting", "last error", "failing since", "refused"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows)));
}

async function signingPanel(at, writable) {
  const { data: s } = await api("GET", `/api/v1/config/${at}/signing-secret`);
  const shown = el("output", { id: "signing-secret-shown", "aria-live": "polite" });
  const reveal = (rotate) => async () => {
    try {
      const { data } = await api("POST", `/api/v1/config/${at}/signing-secret`, { rotate });
      shown.replaceChildren(el("span", { text: "Copy it now, it is not shown again: " }), el("code", { text: data.secret }));
    } catch (err) {
      banner(err.message);
    }
  };
  return el("section", { class: "panel", "aria-label": "Webhook signing secret" }, el("h2", { text: "Webhook signing secret" }),
    el("p", { text: s.fingerprint ? `fingerprint ${s.fingerprint}, created ${when(s.created_at)}${s.revealed ? ", already shown" : ""}` : "none yet" }),
    writable ? el("div", { class: "actions" },
      el("button", { type: "button", id: "reveal-secret", onclick: reveal(false), text: "Show the secret once" }),
      el("button", { type: "button", id: "rotate-secret", class: "secondary", onclick: reveal(true), text: "Rotate" })) : "",
    shown);
}

async function credentialsPanel(oid) {
  const at = `?oid=${encodeURIComponent(oid)}`;
  const { data } = await api("GET", `/api/v1/credentials${at}`);
  const revoke = (path) => async () => {
    try {
      await api("DELETE", `${path}${at}`);
      banner("Revoked.", "info");
      render();
    } catch (err) {
      banner(err.message);
    }
  };
  const name = el("input", { id: "new-key-name", size: 20 });
  const perms = V.permissions.map((p) => el("input", { type: "checkbox", name: "new-key-perm", value: p }));
  const created = el("output", { id: "new-key-shown", "aria-live": "polite" });
  const create = async () => {
    try {
      const permissions = perms.filter((c) => c.checked).map((c) => c.value);
      const { data: k } = await api("POST", `/api/v1/credentials/api-keys${at}`, { name: name.value.trim(), permissions });
      created.replaceChildren(el("span", { text: `Key ${k.name} (${k.key_id}), shown this once: ` }), el("code", { text: k.key }));
    } catch (err) {
      banner(err.message);
    }
  };
  const live = (x) => !x.revoked_at;
  return el("section", { class: "panel", "aria-label": "Credentials" }, el("h2", { text: "Credentials" }),
    el("table", { "aria-label": "Tokens" }, el("thead", {}, el("tr", {}, ...["token", "subject", "permissions", "expires", "last used", ""].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, data.tokens.map((t) => el("tr", {}, el("td", { text: t.jti }), el("td", { text: t.subject }), el("td", { text: Object.entries(t.permissions).map(([o, p]) => `${orgName(o)}: ${p.join(", ")}`).join("; ") }),
        el("td", { text: when(t.expires_at) }), el("td", { text: when(t.last_used_at) || "—" }),
        el("td", {}, live(t) ? el("button", { type: "button", class: "secondary", "aria-label": `revoke token ${t.jti}`, onclick: revoke(`/api/v1/credentials/tokens/${encodeURIComponent(t.jti)}`), text: "Revoke" }) : "revoked"))))),
    el("table", { "aria-label": "API keys" }, el("thead", {}, el("tr", {}, ...["key", "name", "permissions", "created", "last used", ""].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, data.api_keys.map((k) => el("tr", {}, el("td", { text: k.key_id }), el("td", { text: k.name }), el("td", { text: k.permissions.join(", ") }),
        el("td", { text: when(k.created_at) }), el("td", { text: when(k.last_used_at) || "—" }),
        el("td", {}, live(k) ? el("button", { type: "button", class: "secondary", "aria-label": `revoke key ${k.name}`, onclick: revoke(`/api/v1/credentials/api-keys/${encodeURIComponent(k.key_id)}`), text: "Revoke" }) : "revoked"))))),
    el("table", { "aria-label": "Sessions" }, el("thead", {}, el("tr", {}, ...["session", "user", "groups", "signed in", "last seen", ""].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, data.sessions.map((x) => el("tr", {}, el("td", { text: x.session_id }), el("td", { text: x.subject }), el("td", { text: x.groups.join(", ") }),
        el("td", { text: when(x.created_at) }), el("td", { text: when(x.last_seen_at) }),
        el("td", {}, el("button", { type: "button", class: "secondary", "aria-label": `revoke session ${x.session_id}`, onclick: revoke(`/api/v1/credentials/sessions/${encodeURIComponent(x.session_id)}`), text: "Revoke" })))))),
    el("fieldset", {}, el("legend", { text: "New API key" }), field("name", name),
      ...perms.map((c) => field(c.value, c)),
      el("button", { type: "button", id: "create-key", onclick: create, text: "Create key" })),
    created);
}

// --- the queue --------------------------------------------------------------------------------

const FILTERS = ["status", "severity", "classification", "assignee", "escalation_group", "sensor_id", "tag", "search", "sort", "order"];

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
  show(el("h1", { text: "Queue" }), form, list, await knownAssignees(oids));
  await loadQueue(list, q, oids);
  // The first page follows the stream: new tickets appear, changed ones update in place, and the
  // selection, the focus and the scroll position stay as they are.
  if (!q.get("page_token")) live(oids, (events) => (events === null ? loadQueue(list, q, oids) : mergeQueue(list, q, oids)).catch(() => {}));
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
        ...readable.map((o) => field(orgName(o), el("input", { type: "checkbox", name: "oids", value: o, checked: oids.split(",").includes(o) }))))
    : field("orgs", el("input", { name: "oids", value: oids }));
  form.append(
    orgPick,
    checks("status", V.statuses),
    checks("severity", V.severities),
    field("classification", select("classification", ["", ...V.classifications], q.get("classification") || "")),
    field("assignee", el("input", { name: "assignee", value: q.get("assignee") || "", size: 12, list: "known-assignees" })),
    field("escalation group", el("input", { name: "escalation_group", value: q.get("escalation_group") || "", size: 10 })),
    field("sensor", el("input", { name: "sensor_id", value: q.get("sensor_id") || "", size: 12 })),
    field("tag", el("input", { name: "tag", value: q.get("tag") || "", size: 10 })),
    field("search", el("input", { name: "search", type: "search", value: q.get("search") || "", size: 14 })),
    field("sort", select("sort", V.sorts, q.get("sort") || "created_at", { onchange: (e) => {
      // the most urgent clock first: sla_due reads ascending, every other sort newest first
      form.querySelector("select[name=order]").value = e.target.value === "sla_due" ? "asc" : "desc";
    } })),
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

function ticketRow(t) {
  const key = `${t.oid}\n${t.ticket_number}`;
  const href = `/tickets/${t.ticket_number}?oid=${encodeURIComponent(t.oid)}`;
  return el("tr", { "data-key": key },
    el("td", {}, el("input", { type: "checkbox", name: "pick", value: key, "aria-label": `select ticket ${t.ticket_number}` })),
    el("td", {}, el("a", { href, text: `#${t.ticket_number}` })),
    el("td", { class: `sev-${t.severity}`, text: t.severity }),
    el("td", { text: t.status }),
    el("td", {}, t.summary || t.detection_cat || "", t.detection_count > 1 ? el("span", { class: "muted", text: ` (${t.detection_count} detections)` }) : ""),
    el("td", { text: t.hostname || "" }),
    el("td", { text: t.assignee || "" }),
    el("td", {}, sla(t)),
    el("td", { text: when(t.created_at) }),
    el("td", { class: "muted", text: orgName(t.oid), title: t.oid }),
  );
}

function matchCount(data) {
  return `${Object.values(data.total_counts).reduce((a, b) => a + b, 0)} tickets match`;
}

// The page's rows brought up to date without rebuilding them: a row's cells change only where its
// text did (the checkbox and the link are never replaced, so selection and focus stay), new rows
// are inserted where the list puts them, and rows that left the page go unless selected or focused.
async function mergeQueue(list, q, oids) {
  const tbody = list.querySelector("tbody");
  if (!tbody) return loadQueue(list, q, oids);
  const { data } = await api("GET", `/api/v1/tickets?${queueQuery(q, oids)}`);
  const rows = new Map([...tbody.rows].map((r) => [r.dataset.key, r]));
  const keep = new Set();
  let cursor = null;
  for (const t of data.tickets) {
    const fresh = ticketRow(t);
    const row = rows.get(fresh.dataset.key);
    if (row) {
      for (let i = 2; i < fresh.cells.length; i++) {
        const [a, b] = [row.cells[i], fresh.cells[i]];
        if (a.textContent !== b.textContent || a.className !== b.className) a.replaceWith(b);
      }
      cursor = row;
    } else {
      fresh.classList.add("fresh");
      setTimeout(() => fresh.classList.remove("fresh"), 3000);
      if (cursor) cursor.after(fresh);
      else tbody.prepend(fresh);
      cursor = fresh;
    }
    keep.add(fresh.dataset.key);
  }
  for (const [key, row] of rows) {
    if (!keep.has(key) && !row.querySelector("input[name=pick]:checked") && !row.contains(document.activeElement)) row.remove();
  }
  const count = list.querySelector(".pager span");
  if (count) count.textContent = matchCount(data);
}

async function loadQueue(list, q, oids) {
  const { data } = await api("GET", `/api/v1/tickets?${queueQuery(q, oids)}`);
  const rows = data.tickets.map(ticketRow);
  const table = el("table", { "aria-label": "Tickets" },
    el("thead", {}, el("tr", {}, ...["", "#", "severity", "status", "title", "host", "assignee", "SLA", "created", "org"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows));
  const pager = el("div", { class: "pager" }, el("span", { text: matchCount(data) }));
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
  const assignee = el("input", { id: "bulk-assignee", size: 12, list: "known-assignees" });
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
  let shown = await drawTicket(number, oid);
  // Another analyst's change shows as it happens; what this one is typing is never thrown away.
  live(oid, (events) => {
    const mine = events === null ? [] : events.filter((e) => e.oid === oid && String(e.ticket_number) === number && e.version > shown);
    if (events !== null && !mine.length) return; // not this ticket, or already on the page
    const by = mine.length ? mine[mine.length - 1].by : null;
    const focused = document.activeElement;
    if (focused && /^(INPUT|TEXTAREA)$/.test(focused.tagName) && focused.value && focused.type !== "checkbox") {
      banner(`This ticket was just changed${by ? ` by ${by}` : ""}. `, "info",
        el("button", { type: "button", class: "secondary", onclick: () => { banner(""); render(); }, text: "Reload" }));
      return;
    }
    const y = window.scrollY;
    drawTicket(number, oid).then((version) => { shown = version; window.scrollTo(0, y); }).catch((err) => banner(err.message));
  });
}

async function drawTicket(number, oid) {
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
      ["closed", when(t.closed_at)], ["org", orgName(t.oid)], ["version", version],
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
        telemetryPanel(data.telemetry, writable, act, base, at),
        await tasksPanel(writable, act, base, at),
        artifactsPanel(data.artifacts, writable, act, base, at),
        el("section", { class: "panel", id: "export" }, el("h2", { text: "Export" }),
          el("button", { type: "button", class: "secondary", text: "Export JSON",
            onclick: () => saveWithToken(`${base}/export${at}`, `ticket-${oid}-${t.ticket_number}.json`) }), " ",
          el("button", { type: "button", class: "secondary", text: "Export with data",
            onclick: () => saveWithToken(`${base}/export${at}&with_data=true`, `ticket-${oid}-${t.ticket_number}.tar.gz`) })))),
    timelinePanel(data.events),
    writable ? await knownAssignees(oid) : "",
  );
  return Number(version);
}

function actions(t, patch, act, base, at) {
  const moves = (V.transitions[t.status] || []).filter((s) => s !== "merged");
  const classify = select("classification", V.classifications, t.classification, { id: "classify" });
  const assignee = el("input", { id: "assignee", value: t.assignee || "", size: 16, list: "known-assignees" });
  const group = el("input", { id: "escalation-group", value: t.escalation_group || "", size: 16 });
  const tags = el("input", { id: "tags", value: t.tags.join(", "), size: 24 });
  const investigation = el("input", { id: "investigation-id", value: t.investigation_id || "", size: 20 });
  const externalId = el("input", { id: "external-ticket-id", value: t.external_ticket_id || "", size: 12 });
  const externalUrl = el("input", { id: "external-ticket-url", type: "url", value: t.external_ticket_url || "", size: 24 });
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
    el("div", { class: "actions" }, field("investigation id", investigation),
      el("button", { type: "button", id: "save-investigation", onclick: () => patch({ investigation_id: investigation.value.trim() || null }), text: "Set investigation" })),
    el("div", { class: "actions" }, field("external ticket", externalId), field("external ticket URL", externalUrl),
      el("button", { type: "button", id: "save-external", onclick: () => patch({ external_ticket_id: externalId.value.trim() || null,
        external_ticket_url: externalUrl.value.trim() || null }), text: "Link external ticket" })),
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
  const linkId = el("input", { id: "link-detection-id", size: 20 });
  const linkCat = el("input", { id: "link-detection-cat", size: 14 });
  const open = writable && t.status !== "merged";
  return el("section", { class: "panel", id: "detections" },
    el("h2", { text: `Detections (${t.detection_count})` }),
    el("table", {}, el("thead", {}, el("tr", {}, ...["id", "category", "source", "priority", "host", "detected", "grouped by", ""].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, detections.slice(0, 200).map((d) => el("tr", {},
        el("td", { text: d.detection_id }), el("td", { text: d.detection_cat }), el("td", { text: d.detection_source }),
        el("td", { text: String(d.detection_priority) }), el("td", { text: d.hostname }), el("td", { text: when(d.detected_at) }),
        el("td", { class: "grouping", text: groupedBy(d.grouping) }),
        el("td", {}, open && t.detection_count > 1 ? el("button", { type: "button", class: "secondary", "aria-label": `unlink detection ${d.detection_id}`,
          onclick: () => act("DELETE", `${base}/detections/${encodeURIComponent(d.detection_id)}${at}`), text: "Unlink" }) : ""))))),
    detections.length > 200 ? el("p", { class: "muted", text: `The first 200 of ${detections.length} are shown.` }) : "",
    open && t.detection_count > 1 ? el("div", { class: "actions" }, field("split off into a new ticket", split),
      el("button", { type: "button", id: "split", onclick: () => act("POST", `${base}/split${at}`,
        { detection_ids: split.value.split(/[ ,]+/).filter(Boolean) }), text: "Split" })) : "",
    open ? el("form", { class: "actions", "aria-label": "Link a detection", onsubmit: (e) => {
      e.preventDefault();
      act("POST", `${base}/detections${at}`, { detection_id: linkId.value.trim(), detection_cat: linkCat.value.trim() || "manual" });
    } }, field("detection id", linkId), field("category", linkCat), el("button", { type: "submit", text: "Link detection" })) : "");
}

function entitiesPanel(entities, writable, act, base, at, oid) {
  const panel = el("section", { class: "panel", id: "entities" }, el("h2", { text: `Entities (${entities.length})` }),
    el("table", {}, el("tbody", {}, entities.map((e) => {
      const path = `${base}/entities/${e.entity_id}${at}`;
      const verdict = select("verdict", V.verdicts, e.verdict, { "aria-label": `verdict of ${e.entity_value}` });
      return el("tr", {},
        el("td", { text: e.entity_type }),
        el("td", {}, el("a", { href: `/entities?oids=${encodeURIComponent(oid)}&entity_type=${encodeURIComponent(e.entity_type)}&entity_value=${encodeURIComponent(e.entity_value)}`, title: "tickets holding this indicator", text: e.entity_value })),
        el("td", {}, writable ? verdict : e.verdict),
        writable ? el("td", {},
          el("button", { type: "button", class: "secondary", "aria-label": `set the verdict of ${e.entity_value}`, onclick: () => act("PATCH", path, { verdict: verdict.value }), text: "Set" }), " ",
          el("button", { type: "button", class: "secondary", "aria-label": `remove entity ${e.entity_value}`, onclick: () => act("DELETE", path), text: "Remove" })) : "");
    }))));
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

function telemetryPanel(items, writable, act, base, at) {
  const panel = el("section", { class: "panel", id: "telemetry" }, el("h2", { text: `Telemetry (${items.length})` }),
    el("ul", {}, items.map((x) => {
      const verdict = select("verdict", ["", ...V.verdicts], x.verdict || "", { "aria-label": `verdict of telemetry ${x.atom}` });
      return el("li", {}, `${x.event_type || "event"} ${x.atom} on ${x.sid}: ${x.event_summary || ""} ${x.verdict ? `(${x.verdict})` : ""} `,
        writable ? [verdict, " ",
          el("button", { type: "button", class: "secondary", "aria-label": `set the verdict of telemetry ${x.atom}`,
            onclick: () => act("PATCH", `${base}/telemetry/${x.telemetry_id}${at}`, { verdict: verdict.value || null }), text: "Set" }), " ",
          el("button", { type: "button", class: "secondary", "aria-label": `remove telemetry ${x.atom}`,
            onclick: () => act("DELETE", `${base}/telemetry/${x.telemetry_id}${at}`), text: "Remove" })] : "");
    })));
  if (writable) {
    const atom = el("input", { id: "telemetry-atom", required: true, size: 16 });
    const sid = el("input", { id: "telemetry-sid", required: true, size: 16 });
    const summary = el("input", { id: "telemetry-summary", size: 22 });
    const verdict = select("verdict", ["", ...V.verdicts], "", { id: "telemetry-verdict" });
    panel.append(el("form", { class: "actions", "aria-label": "Add telemetry", onsubmit: (e) => {
      e.preventDefault();
      act("POST", `${base}/telemetry${at}`, { atom: atom.value.trim(), sid: sid.value.trim(), event_summary: summary.value || null, verdict: verdict.value || null });
    } }, field("atom", atom), field("sensor id", sid), field("summary", summary), field("verdict", verdict), el("button", { type: "submit", text: "Add telemetry" })));
  }
  return panel;
}

// The ticket's checklist (GET/POST …/tasks, PATCH …/tasks/{id}): its own call, as the page's one
// read of the ticket does not carry it.
async function tasksPanel(writable, act, base, at) {
  const { data } = await api("GET", `${base}/tasks${at}`);
  const panel = el("section", { class: "panel", id: "tasks" }, el("h2", { text: `Tasks (${data.tasks.filter((x) => x.done).length}/${data.tasks.length} done)` }),
    el("ul", {}, data.tasks.map((x) => el("li", {},
      writable ? el("input", { type: "checkbox", checked: x.done, "aria-label": `${x.title} done`,
        onchange: (e) => act("PATCH", `${base}/tasks/${x.task_id}${at}`, { done: e.target.checked }) }) : (x.done ? "✓ " : "☐ "),
      ` ${x.title}`, x.mandatory ? el("strong", { text: " (mandatory)" }) : "",
      x.assignee ? el("span", { class: "muted", text: ` · ${x.assignee}` }) : "",
      x.description ? el("div", { class: "muted", text: x.description }) : ""))));
  if (writable) {
    const title = el("input", { id: "task-title", required: true, size: 24 });
    const mandatory = el("input", { type: "checkbox", id: "task-mandatory" });
    const assignee = el("input", { id: "task-assignee", size: 16, list: "known-assignees" });
    panel.append(el("form", { class: "actions", "aria-label": "Add a task", onsubmit: (e) => {
      e.preventDefault();
      act("POST", `${base}/tasks${at}`, { title: title.value.trim(), mandatory: mandatory.checked, assignee: assignee.value.trim() || null });
    } }, field("task", title), field("mandatory", mandatory), field("task assignee", assignee), el("button", { type: "submit", text: "Add task" })));
  }
  return panel;
}

// The assignees the orgs use, offered by every assignee field (one datalist per view).
async function knownAssignees(oids) {
  const list = el("datalist", { id: "known-assignees" });
  try {
    const { data } = await api("GET", `/api/v1/assignees?oids=${encodeURIComponent(oids)}`);
    list.append(...data.assignees.map((a) => el("option", { value: a })));
  } catch {
    // the fields still take any address
  }
  return list;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function artifactsPanel(items, writable, act, base, at) {
  // An uploaded file is only ever saved (fetched, then offered as a download): never opened here.
  const download = (a) => el("button", { type: "button", class: "secondary", "aria-label": `download ${a.name}`,
    onclick: () => saveWithToken(`${base}/artifacts/${a.artifact_id}/content${at}`, a.name), text: "Download" });
  const panel = el("section", { class: "panel", id: "artifacts" }, el("h2", { text: `Artifacts (${items.length})` }),
    el("ul", {}, items.map((a) => el("li", {}, a.sha256
      ? `${a.artifact_type}: ${a.name} (${bytes(a.size)}, sha256 ${a.sha256.slice(0, 12)}…) ${a.description || ""} `
      : `${a.artifact_type}: ${a.description || ""} ${a.url || a.path || a.hash || ""} `,
      a.sha256 ? download(a) : "",
      writable ? el("button", { type: "button", class: "secondary", "aria-label": `remove artifact ${a.artifact_type} ${a.name || a.description || ""}`.trim(),
        onclick: () => act("DELETE", `${base}/artifacts/${a.artifact_id}${at}`), text: "Remove" }) : ""))));
  if (writable) {
    const type = el("input", { id: "artifact-type", required: true, size: 10, value: "pcap" });
    const description = el("input", { id: "artifact-description", size: 20 });
    const url = el("input", { id: "artifact-url", size: 24, type: "url" });
    panel.append(el("form", { class: "actions", onsubmit: (e) => {
      e.preventDefault();
      act("POST", `${base}/artifacts${at}`, { artifact_type: type.value, description: description.value || null, url: url.value || null });
    } }, field("type", type), field("description", description), field("url", url), el("button", { type: "submit", text: "Add artifact" })));
    panel.append(uploadForm(base, at, act));
  }
  return panel;
}

// A file upload with its progress (XMLHttpRequest: fetch reports no upload progress); the file is
// streamed by the API into the evidence store, and recorded once whole.
function uploadForm(base, at, act) {
  const file = el("input", { id: "artifact-file", type: "file", required: true });
  const kind = el("input", { id: "artifact-file-type", size: 10, value: "file" });
  const progress = el("progress", { id: "upload-progress", max: 100, value: 0, hidden: true, "aria-label": "upload progress" });
  const form = el("form", { class: "actions", "aria-label": "Upload a file", onsubmit: (e) => {
    e.preventDefault();
    if (!file.files.length) return;
    const body = new FormData();
    body.append("artifact_type", kind.value || "file");
    body.append("file", file.files[0]);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${base}/artifacts/upload${at}`);
    for (const [k, v] of Object.entries(authHeaders("POST"))) xhr.setRequestHeader(k, v);
    progress.hidden = false;
    xhr.upload.onprogress = (p) => { if (p.lengthComputable) progress.value = Math.round((100 * p.loaded) / p.total); };
    xhr.onload = () => {
      progress.value = 100;
      if (xhr.status === 201) return act("GET", `${base}${at}`);
      let message = `HTTP ${xhr.status}`;
      try { message = JSON.parse(xhr.responseText).error || message; } catch { /* not JSON */ }
      banner(`Upload refused: ${message}`);
    };
    xhr.onerror = () => banner("Upload failed: the connection was lost");
    xhr.send(body);
  } }, field("file", file), field("type", kind), el("button", { type: "submit", text: "Upload file" }), progress);
  return form;
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
      ` ${m.status}, ${m.severity}, verdict ${m.entity.verdict} (${orgName(m.oid)})`))));
}

// --- dashboard and reports --------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// Horizontal bars scaled to the largest value; a zero draws no bar, a missing value shows "—".
function bars(title, values, format) {
  const entries = Object.entries(values);
  const max = Math.max(0, ...entries.map(([, v]) => v || 0));
  const row = 24;
  const shown = (v) => (v === null || v === undefined ? "—" : format ? format(v) : String(v));
  const svg = svgEl("svg", { class: "chart", role: "img", width: 520, height: row * entries.length + 8,
    "aria-label": `${title}: ${entries.map(([k, v]) => `${k} ${shown(v)}`).join(", ")}` });
  entries.forEach(([k, v], i) => {
    const y = i * row + 4;
    const width = max > 0 && v > 0 ? (300 * v) / max : 0;
    svg.append(svgEl("text", { x: 0, y: y + 15 }, k));
    if (width > 0) svg.append(svgEl("rect", { x: 140, y, height: 18, width: Math.max(1, width), fill: "#0b57d0" }));
    svg.append(svgEl("text", { x: 146 + width, y: y + 15 }, shown(v)));
  });
  return el("figure", { class: "panel" }, el("figcaption", { text: title }), svg);
}

const SERIES_COLOURS = ["#0b57d0", "#a50e0e", "#146c2e", "#8a5300"];

// A time series per bucket: one line per series (a gap where a value is missing), its axis from
// zero to the largest value, the first and last bucket named; the figures are in its label too.
function lines(title, starts, series, format) {
  const W = 560, H = 180, left = 48, bottom = 24, top = 10;
  const all = Object.values(series).flat().filter((v) => v !== null && v !== undefined);
  const max = Math.max(0, ...all);
  const x = (i) => left + (starts.length > 1 ? ((W - left - 10) * i) / (starts.length - 1) : 0);
  const y = (v) => top + (H - top - bottom) * (1 - (max > 0 ? v / max : 0));
  const fmt = (v) => (v === null || v === undefined ? "—" : format ? format(v) : String(v));
  const day = (t) => t.slice(0, 10);
  const svg = svgEl("svg", { class: "chart", role: "img", width: W, height: H,
    "aria-label": `${title}. ${Object.entries(series).map(([name, vs]) => `${name}: ${vs.map((v, i) => `${day(starts[i])} ${fmt(v)}`).join(", ")}`).join(". ")}` });
  svg.append(svgEl("line", { x1: left, y1: y(0), x2: W - 10, y2: y(0), stroke: "#cfd6de" }),
    svgEl("text", { x: 0, y: y(max) + 4 }, fmt(max)), svgEl("text", { x: 0, y: y(0) }, fmt(0)));
  if (starts.length) {
    svg.append(svgEl("text", { x: left, y: H - 4 }, day(starts[0])));
    svg.append(svgEl("text", { x: W - 90, y: H - 4 }, day(starts[starts.length - 1])));
  }
  Object.entries(series).forEach(([name, vs], k) => {
    let d = "";
    vs.forEach((v, i) => {
      if (v === null || v === undefined) return;
      d += `${d && vs[i - 1] !== null && vs[i - 1] !== undefined ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
    });
    if (d) svg.append(svgEl("path", { d, fill: "none", stroke: SERIES_COLOURS[k % 4], "stroke-width": 2 }));
  });
  const legend = el("p", { class: "legend" }, ...Object.keys(series).map((name, k) =>
    el("span", { class: `key key-${k % 4}`, text: name })));
  return el("figure", { class: "panel" }, el("figcaption", { text: title }), svg, legend);
}

function orgsParam() {
  return new URLSearchParams(location.search).get("oids") || orgsWith("investigation.get").join(",");
}

async function dashboardPage() {
  const oids = orgsParam();
  const counts = el("div", { id: "counts" });
  show(el("h1", { text: "Dashboard" }), counts,
    el("h2", { text: "Active suppressions" }), await suppressionsTable(oids.split(",").filter(Boolean)),
    suppressionForm(oids.split(",").filter((o) => can("investigation.set", o))),
    awayForm(oids.split(",").filter(Boolean)),
    await archivePanel(oids));
  await drawDashboard(counts, oids);
  // only the counts are drawn again: what is being typed in the forms below stays
  session.timer = setInterval(() => page() === "dashboard" && drawDashboard(counts, oids).catch(() => {}), POLL_MS * 3);
}

async function drawDashboard(counts, oids) {
  const { data } = await api("GET", `/api/v1/dashboard/counts?oids=${encodeURIComponent(oids)}`);
  const t = data.total;
  const card = (label, n, cls) => el("div", { class: "card" }, el("div", { class: `n ${cls || ""}`, text: String(n) }), el("div", { text: label }));
  const perOrg = el("table", { "aria-label": "Per org" },
    el("thead", {}, el("tr", {}, ...["org", "tickets", ...V.statuses, "MTTA breaches", "MTTR breaches"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, Object.entries(data.orgs).map(([oid, c]) => el("tr", {},
      el("td", { text: orgName(oid), title: oid }), el("td", { text: String(c.total) }), ...V.statuses.map((s) => el("td", { text: String(c.by_status[s] || 0) })),
      el("td", { text: String(c.sla_breaches.mtta) }), el("td", { text: String(c.sla_breaches.mttr) })))));
  counts.replaceChildren(
    el("div", { class: "cards" }, card("tickets", t.total), card("new", t.by_status.new || 0),
      card("open MTTA breaches", t.sla_breaches.mtta, "breached"), card("open MTTR breaches", t.sla_breaches.mttr, "breached")),
    el("div", { class: "grid" },
      bars("Tickets by status", Object.fromEntries(V.statuses.map((s) => [s, t.by_status[s] || 0]))),
      bars("Tickets by severity", Object.fromEntries(V.severities.map((s) => [s, t.by_severity[s] || 0])))),
    el("h2", { text: "Per org" }), perOrg);
}

// A new suppression (POST /api/v1/suppressions): what it matches, why, and until when.
function suppressionForm(writable) {
  if (!writable.length) return "";
  const org = select("org", writable.map((o) => [o, orgName(o)]), writable[0], { id: "suppress-org" });
  const category = el("input", { id: "suppress-category", size: 14, value: "*" });
  const source = el("input", { id: "suppress-source", size: 10, value: "*" });
  const reason = el("input", { id: "suppress-reason", size: 24, required: true });
  const until = el("input", { id: "suppress-until", type: "datetime-local", required: true });
  const critical = el("input", { type: "checkbox", id: "suppress-critical" });
  const form = el("form", { class: "filters", "aria-label": "New suppression", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("POST", `/api/v1/suppressions?oid=${encodeURIComponent(org.value)}`, { match: { category: category.value || "*", source: source.value || "*" },
        reason: reason.value, expires_at: new Date(until.value).toISOString(), include_critical: critical.checked });
      banner("Suppression created.", "info");
      render();
    } catch (err) {
      banner(err.message);
    }
  } }, el("strong", { text: "New suppression" }), field("org", org), field("category", category), field("source", source), field("reason", reason),
    field("until", until), field("critical too", critical), el("button", { type: "submit", text: "Suppress" }));
  return form;
}

// Out of routing's rotation until a time (PUT /api/v1/analysts/{me}), or back now.
function awayForm(oids) {
  const me = session.who.subject;
  if (!oids.length || !me.includes("@")) return "";
  const until = el("input", { id: "away-until", type: "datetime-local" });
  const put = async (value) => {
    try {
      for (const oid of oids) await api("PUT", `/api/v1/analysts/${encodeURIComponent(me)}?oid=${encodeURIComponent(oid)}`, { away_until: value });
      banner(value ? `Away until ${when(value)}: routing skips you.` : "Back: routing hands you tickets again.", "info");
    } catch (err) {
      banner(err.message);
    }
  };
  return el("form", { class: "filters", "aria-label": "Away", onsubmit: (e) => { e.preventDefault(); if (until.value) put(new Date(until.value).toISOString()); } },
    el("strong", { text: `${me}: ` }), field("away until", until), el("button", { type: "submit", text: "Set away" }),
    el("button", { type: "button", class: "secondary", onclick: () => put(null), text: "Back now" }));
}

// A file the API answers, saved: fetched with the token (a plain link would carry none).
async function saveWithToken(path, filename) {
  const r = await fetch(path, { headers: authHeaders() });
  if (!r.ok) return banner(`HTTP ${r.status}`);
  el("a", { href: URL.createObjectURL(await r.blob()), download: filename }).click();
}

// Archived tickets (retention) and each one's export, fetched with the token.
async function archivePanel(oids) {
  const { data } = await api("GET", `/api/v1/archive?oids=${encodeURIComponent(oids)}&limit=50`);
  const download = (x) => () => saveWithToken(`/api/v1/archive/${x.ticket_number}?oid=${encodeURIComponent(x.oid)}`, `ticket-${x.oid}-${x.ticket_number}.json`);
  return el("section", { id: "archive" }, el("h2", { text: `Archived tickets (${data.tickets.length})` }),
    data.tickets.length ? el("table", { "aria-label": "Archived tickets" },
      el("thead", {}, el("tr", {}, ...["#", "org", "severity", "status", "created", "archived", ""].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, data.tickets.map((x) => el("tr", {}, el("td", { text: `#${x.ticket_number}` }), el("td", { text: orgName(x.oid) }),
        el("td", { text: x.severity }), el("td", { text: x.status }), el("td", { text: when(x.created_at) }), el("td", { text: when(x.archived_at) }),
        el("td", {}, el("button", { type: "button", class: "secondary", "aria-label": `download archived ticket ${x.ticket_number}`, onclick: download(x), text: "Download" })))))) :
      el("p", { class: "muted", text: "None archived yet." }));
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
    el("thead", {}, el("tr", {}, ...["org", "matches", "reason", "by", "expires", "held", "last held", ""].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows.map((x) => el("tr", {},
      el("td", { text: orgName(x.oid) }), el("td", { text: match(x) }), el("td", { text: x.reason }), el("td", { text: x.created_by || "" }),
      el("td", { text: when(x.expires_at) }), el("td", { class: "held", text: String(x.held) }),
      el("td", { text: x.last_held_at ? `${x.last_detection_id} · ${when(x.last_held_at)}` : "—" }),
      el("td", {}, can("investigation.set", x.oid) ? el("button", { type: "button", class: "secondary", "aria-label": `end suppression ${x.reason}`, onclick: async () => {
        try {
          await api("DELETE", `/api/v1/suppressions/${x.suppression_id}?oid=${encodeURIComponent(x.oid)}`);
          banner("Suppression ended.", "info");
          render();
        } catch (err) {
          banner(err.message);
        }
      }, text: "End" }) : "")))));
}

const minutes = (s) => (s === null || s === undefined ? "—" : `${(s / 60).toFixed(1)} min`);
// A duration in the unit that reads best: seconds, minutes or hours.
const duration = (s) => (s < 60 ? `${s.toFixed(1)} s` : s < 3600 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`);
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
  const interval = q.get("interval") === "week" ? "week" : "day";
  const oids = orgsParam();
  const form = el("form", { class: "filters", "aria-label": "Report period", onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const out = new URLSearchParams({ oids, from: f.get("from"), to: f.get("to"), interval: f.get("interval") });
    if (f.get("group_by")) out.set("group_by", f.get("group_by"));
    go(`/reports?${out}`);
  } },
  field("from", el("input", { type: "date", name: "from", value: from, required: true })),
  field("to", el("input", { type: "date", name: "to", value: to, required: true })),
  field("group by", select("group_by", [["", "nothing"], ...V.group_by.map((g) => [g, g])], groupBy)),
  field("trend by", select("interval", [["day", "day"], ["week", "week"]], interval)),
  el("button", { type: "submit", text: "Show" }));
  const results = el("div", { id: "report" });
  show(el("h1", { text: "Reports" }), form, results);
  const params = new URLSearchParams({ oids, from: `${from}T00:00:00Z`, to: `${to}T00:00:00Z` });
  if (groupBy) params.set("group_by", groupBy);
  // the page's four reports are asked for at once: it takes as long as the slowest, not their sum
  const parts = [trendPanel(params, interval, from, to), tasksReport(params), rulesReport(params, from, to)];
  for (const part of parts) part.catch(() => {}); // (awaited below; a failure is shown from there)
  const { data } = await api("GET", `/api/v1/reports/summary?${params}`);
  const a = data.aggregate;
  const rows = [metricsRow("all", a)];
  for (const [name, m] of Object.entries(a.groups || {})) rows.push(metricsRow(name, m));
  for (const [oid, m] of Object.entries(data.orgs)) rows.push(metricsRow(`org ${orgName(oid)}`, m));
  const csv = [REPORT_COLUMNS, ...rows].map((r) => r.map((c) => `"${String(c).replaceAll('"', '""')}"`).join(",")).join("\n");
  const download = el("a", { href: URL.createObjectURL(new Blob([csv], { type: "text/csv" })), download: `report-${from}-${to}.csv`, id: "csv", text: "Download CSV" });
  const groups = a.groups || {};
  results.replaceChildren(
    el("p", {}, `${from} to ${to}: ${a.total} tickets. `, download),
    el("div", { class: "grid" },
      bars("MTTA: mean, median, p90", { mean: a.mtta.mean_s, median: a.mtta.median_s, p90: a.mtta.p90_s }, duration),
      bars("MTTR: mean, median, p90", { mean: a.mttr.mean_s, median: a.mttr.median_s, p90: a.mttr.p90_s }, duration),
      bars("SLA compliance and rates (%)", { "MTTA SLA": a.mtta.sla_compliance_pct, "MTTR SLA": a.mttr.sla_compliance_pct,
        "true positive": a.true_positive_rate_pct, "false positive": a.false_positive_rate_pct, escalation: a.escalation_rate_pct }, (p) => p.toFixed(1)),
      Object.keys(groups).length ? bars(`Mean MTTR by ${groupBy}`, Object.fromEntries(Object.entries(groups).map(([g, m]) => [g, m.mttr.mean_s])), duration) : ""),
    el("table", { "aria-label": "Report" }, el("thead", {}, el("tr", {}, ...REPORT_COLUMNS.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows.map((r) => el("tr", {}, ...r.map((c) => el("td", { text: String(c) })))))),
    ...(await Promise.all(parts)));
}

// The tasks report: per task title, how many were completed in the period and how fast.
async function tasksReport(params) {
  const q = new URLSearchParams({ oids: params.get("oids"), from: params.get("from"), to: params.get("to") });
  const { data } = await api("GET", `/api/v1/reports/tasks?${q}`);
  return el("section", { id: "tasks-report" }, el("h2", { text: "Tasks" }),
    data.tasks.length ? el("table", { "aria-label": "Tasks report" },
      el("thead", {}, el("tr", {}, ...["task", "completed", "median time to complete", "still open"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, data.tasks.map((x) => el("tr", {}, el("td", { text: x.title }), el("td", { text: String(x.completed) }),
        el("td", { text: minutes(x.median_seconds_to_complete) }), el("td", { text: String(x.open) }))))) :
      el("p", { class: "muted", text: "No task was added in the period." }));
}

// Trends over the period, a point per day or week (GET /api/v1/reports/trend), and its CSV.
async function trendPanel(params, interval, from, to) {
  const q = new URLSearchParams({ oids: params.get("oids"), from: params.get("from"), to: params.get("to"), interval });
  const { data } = await api("GET", `/api/v1/reports/trend?${q}`);
  const b = data.buckets;
  const starts = b.map((x) => x.start);
  const download = el("button", { type: "button", class: "secondary", id: "trend-csv", text: "Download trend CSV", onclick: () => saveWithToken(`/api/v1/reports/trend?${q}&format=csv`, `trend-${interval}-${from}-${to}.csv`) });
  return el("section", { id: "trend" },
    el("h2", { text: `Trend by ${interval}` }), el("p", {}, download),
    el("div", { class: "grid" },
      lines("Tickets opened and closed", starts, { opened: b.map((x) => x.opened), closed: b.map((x) => x.closed) }),
      lines("MTTA: median and p90", starts, { median: b.map((x) => x.mtta.median_s), p90: b.map((x) => x.mtta.p90_s) }, duration),
      lines("MTTR: median and p90", starts, { median: b.map((x) => x.mttr.median_s), p90: b.map((x) => x.mttr.p90_s) }, duration),
      lines("SLA compliance and false positives (%)", starts, {
        "MTTA SLA": b.map((x) => x.mtta.sla_compliance_pct), "MTTR SLA": b.map((x) => x.mttr.sla_compliance_pct),
        "false positive": b.map((x) => x.false_positive_rate_pct) }, (p) => p.toFixed(1))));
}

const RULE_COLUMNS = ["org", "category", "source", "detections", "tickets", "grouped", "suppressed", "TP", "FP", "FP rate",
  "median MTTR", "needs tuning"];

// The rule health report: which detection rules make the noise, over the same period.
async function rulesReport(params, from, to) {
  const q = new URLSearchParams({ oids: params.get("oids"), from: params.get("from"), to: params.get("to") });
  const { data } = await api("GET", `/api/v1/reports/rules?${q}`);
  const share = (x) => (x === null || x === undefined ? "—" : `${(x * 100).toFixed(1)}%`);
  const rows = data.rules.map((r) => [orgName(r.oid), r.category, r.source, r.detections, r.tickets, share(r.grouped_share), r.suppressed,
    r.true_positives, r.false_positives, share(r.false_positive_rate), minutes(r.median_mttr_seconds), r.needs_tuning ? "yes" : "no"]);
  const csv = [RULE_COLUMNS, ...rows].map((r) => r.map((c) => `"${String(c).replaceAll('"', '""')}"`).join(",")).join("\n");
  const download = el("a", { href: URL.createObjectURL(new Blob([csv], { type: "text/csv" })), download: `rules-${from}-${to}.csv`, id: "rules-csv", text: "Download the rule report (CSV)" });
  return el("section", { id: "rules" }, el("h2", { text: "Rule health" }),
    el("p", {}, `${data.rules.length} detection rules. `, download),
    el("table", { "aria-label": "Rule health" }, el("thead", {}, el("tr", {}, ...RULE_COLUMNS.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows.map((r, i) => el("tr", { class: data.rules[i].needs_tuning ? "needs-tuning" : "" }, ...r.map((c) => el("td", { text: String(c) })))))));
}

render();
