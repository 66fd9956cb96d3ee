// runlake dashboard: each page reads the public JSON API and draws itself (docs/dashboard.md).
// No framework and no build step; the DOM is built with textContent only (no innerHTML),
// so nothing a run reports can inject markup.
"use strict";

const SESSION = JSON.parse(document.getElementById("session").textContent);
const MAIN = document.getElementById("main");
const PAGE = document.body.dataset.page;
const QS = new URLSearchParams(location.search);
const CAN_DELETE = !SESSION.auth || SESSION.role === "admin";
const STATUSES = ["pending", "running", "completed", "failed", "cancelled"];
const LEVELS = ["debug", "info", "warning", "error", "critical"];
const OUTCOMES = ["passed", "failed", "skipped", "error", "xfailed", "xpassed"];
const RUN_COLUMNS = ["run_id", "status", "model", "hardware", "batch_id", "name", "created_at",
  "started_at", "finished_at", "duration_s", "updated_at"];
const DEFAULT_COLUMNS = ["run_id", "status", "model", "hardware", "created_at", "duration_s"];
const SORTABLE = new Set(["created_at", "updated_at", "started_at", "finished_at", "duration_s",
  "run_id", "status", "model", "hardware"]);
const MAX_CHART_POINTS = 2000;  // per series (the bound)
const MAX_CHARTS = 6;  // charts drawn at once; the rest are listed and chosen by name
const MAX_COMPARE = 10;
const ROUTES = new Set(SESSION.routes || []);  // the optional routes this server has
const FACET_LIMIT = 20;  // values a facet lists (most runs first)
const TOP_TESTS = 20;  // rows of each tests top list

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
  }
}

// One API call: the sign-in cookie goes along (same origin); state-changing calls carry
// the CSRF token (docs/security.md "Dashboard").
async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (options.method && options.method !== "GET" && SESSION.csrf) headers["X-CSRF-Token"] = SESSION.csrf;
  const resp = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (resp.status === 401 && SESSION.auth) {
    location.assign("/signin?next=" + encodeURIComponent(location.pathname + location.search));
    return new Promise(() => {});
  }
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

// Later features (facets, the live stream, test history) are used only where the
// server has their routes: the page's shell lists those it has (web/pages.py), so no
// request probes for them and none 404s.
function serverRoutes() {
  return Promise.resolve(new Set(SESSION.routes || []));
}
window.runlakeRoutes = serverRoutes;

// -- DOM helpers ----------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function section(title, ...children) {
  const id = "s-" + title.toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return el("section", { "aria-labelledby": id }, el("h2", { id, text: title }), ...children);
}

function table(headers, rows, attrs = {}) {
  return el("table", attrs,
    el("thead", {}, el("tr", {}, headers.map((h) => (h instanceof Node ? h : el("th", { scope: "col", text: h }))))),
    el("tbody", {}, rows));
}

function fmtNum(v, digits = 6) {
  if (v === null || v === undefined) return "—";
  return Number.isInteger(v) ? String(v) : Number(v.toPrecision(digits)).toString();
}
function fmtRate(v) { return v === null || v === undefined ? "—" : (100 * v).toFixed(1) + "%"; }
function fmtTime(v) { return v ? v.replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$|Z$/, " UTC") : "—"; }
function statusCell(s) { return el("span", { class: "status-" + s, text: s }); }
function runHref(component, runId) { return `/run/${encodeURIComponent(component)}/${encodeURIComponent(runId)}`; }
function enc(s) { return encodeURIComponent(s); }

function urlWith(changes) {
  const q = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(changes)) {
    q.delete(k);
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else if (v !== null && v !== undefined && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return location.pathname + (s ? "?" + s : "");
}

function selectField(label, name, values, current, allLabel = "any") {
  const id = "f-" + name;
  return [el("label", { for: id, text: label }),
    el("select", { id, name }, el("option", { value: "", text: allLabel }),
      values.map((v) => el("option", { value: v, selected: v === current, text: v })))];
}
function inputField(label, name, current, type = "text") {
  const id = "f-" + name;
  return [el("label", { for: id, text: label }), el("input", { id, name, type, value: current || "" })];
}

// A form whose submission becomes the URL's query (shareable), `offset` reset.
function urlForm(children, fixed = {}, cls = "stack") {
  const form = el("form", { class: cls }, children);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const changes = { offset: null, next: null, ...fixed };
    for (const [k, v] of new FormData(form).entries()) changes[k] = v;
    location.assign(urlWith(changes));
  });
  return form;
}

function pager(page, offsetParam = "offset") {
  const { offset, limit, total, items } = page;
  const from = total ? offset + 1 : 0;
  const to = offset + items.length;
  const prev = offset > 0 ? el("a", { href: urlWith({ [offsetParam]: Math.max(0, offset - limit) || null }), rel: "prev", text: "← Previous" }) : null;
  const next = to < total ? el("a", { href: urlWith({ [offsetParam]: offset + limit }), rel: "next", text: "Next →" }) : null;
  return el("nav", { class: "pager", "aria-label": "Pages" }, prev,
    el("span", { "data-testid": "page-info", text: `${from}–${to} of ${total}` }), next);
}

async function components() {
  const overview = await api("/api/db/overview");
  return Object.keys(overview.components).sort();
}

function chosenComponent(names) {
  const c = QS.get("component");
  return c && names.includes(c) ? c : names[0];
}

function componentPicker(names, current) {
  return urlForm([el("div", { class: "inline" }, el("label", {}, "Component",
    el("select", { name: "component", id: "f-component" }, names.map((n) => el("option", { value: n, selected: n === current, text: n })))),
  el("button", { type: "submit", text: "Show" }))], {}, "picker");
}

// -- charts (uPlot) -------------------------------------------------------------------

function chart(title, xs, series, opts = {}) {
  const box = el("figure", { class: "chart", "data-testid": "chart" }, el("figcaption", { text: title }));
  if (typeof uPlot === "undefined" || xs.length === 0) return box;
  const width = Math.min(560, Math.max(320, (MAIN.clientWidth || 800) / 2 - 32));
  const spec = {
    width, height: 220, scales: { x: { time: !!opts.time } },
    series: [{ label: opts.xLabel || "x" }, ...series.map((s) => ({ label: s.label, stroke: s.stroke || "#0b5cad", fill: s.fill, width: 1.5 }))],
    bands: opts.bands,
  };
  const start = performance.now();
  new uPlot(spec, [xs, ...series.map((s) => s.values)], box);
  performance.measure("runlake:chart", { start, end: performance.now() });  // bench/dashboard.py
  return box;
}

// A chart reads its metric downsampled by the server (…/metrics/buckets): per bucket of
// consecutive points the last value is the line and min–max a band (W&B-style), so it
// draws at most MAX_CHART_POINTS points per series whatever the run's length.
async function metricChart(component, runId, name) {
  const m = await api(`/api/${enc(component)}/db/run/${enc(runId)}/metrics/buckets?name=${enc(name)}&buckets=${MAX_CHART_POINTS}`);
  const bs = m.buckets;
  const byStep = bs.every((b) => b.step !== null);
  const xs = bs.map((b) => (byStep ? b.step : Date.parse(b.ts) / 1000));
  const series = [{ label: name, values: bs.map((b) => b.last) }];
  let bands;
  if (bs.some((b) => b.count > 1)) {
    series.push({ label: "min", values: bs.map((b) => b.min), stroke: "#9bb7d4" }, { label: "max", values: bs.map((b) => b.max), stroke: "#9bb7d4" });
    bands = [{ series: [3, 2], fill: "rgba(11,92,173,0.1)" }];
  }
  const unit = m.unit ? ` (${m.unit})` : "";
  const note = m.points > bs.length ? ` — ${m.points} points in ${bs.length} buckets` : "";
  const box = chart(name + unit + note, xs, series, { time: !byStep, xLabel: byStep ? "step" : "time", bands });
  box.dataset.metric = name;
  box.dataset.points = m.points;
  return box;
}

// -- pages ----------------------------------------------------------------------------

const PAGES = {};

PAGES.home = async function () {
  const o = await api("/api/db/overview");
  const t = o.total;
  const out = [section("Totals",
    el("div", { class: "cards" },
      card("Runs", t.runs, "total-runs"), card("Success rate", fmtRate(t.success_rate), "total-success-rate"),
      card("Events", t.events, "total-events"), card("Last activity", fmtTime(t.last_seen), "total-last-seen")),
    el("h3", { text: "Runs by status" }),
    table(STATUSES, [el("tr", { "data-testid": "total-by-status" }, STATUSES.map((s) => el("td", { class: "num", "data-status": s, text: t.by_status[s] || 0 })))]))];
  const names = Object.keys(o.components).sort();
  if (ROUTES.has("/api/stream")) {
    out.push(section("Live: runs changing status", FEED));
    window.runlakeLive = { folded: homeFolded };
  }
  out.push(section("Components", names.length === 0 ? el("p", { text: "No runs yet." }) :
    table(["Component", "Runs", ...STATUSES, "Success rate", "Events", "Last activity"], names.map((n) => {
      const c = o.components[n];
      return el("tr", { "data-component": n },
        el("th", { scope: "row" }, el("a", { href: "/runs?component=" + enc(n), text: n })),
        el("td", { class: "num", "data-field": "runs", text: c.runs }),
        STATUSES.map((s) => el("td", { class: "num", "data-status": s, text: c.by_status[s] || 0 })),
        el("td", { class: "num", "data-field": "success_rate", text: fmtRate(c.success_rate) }),
        el("td", { class: "num", text: c.events }), el("td", { text: fmtTime(c.last_seen) }));
    }))));
  return out;
};

// The home page's feed of runs changing status, newest first; kept across redraws.
const FEED = el("ol", { class: "feed", "data-testid": "live-feed", "aria-live": "polite" });
const FEED_MAX = 20;
function homeFolded(msg) {
  const at = new Date().toISOString();
  for (const r of msg.runs) {
    const status = r.status ?? "deleted";
    FEED.prepend(el("li", { "data-run": `${r.component}/${r.run_id}`, "data-status": status },
      el("time", { text: fmtTime(at) }), " ",
      r.status === null ? `${r.component}/${r.run_id}` : el("a", { href: runHref(r.component, r.run_id), text: `${r.component}/${r.run_id}` }),
      " → ", statusCell(status)));
  }
  while (FEED.children.length > FEED_MAX) FEED.lastChild.remove();
  return true;  // the totals change too
}

function card(label, value, testid) {
  return el("div", { class: "card" }, el("div", { class: "muted", text: label }), el("div", { class: "value", "data-testid": testid, text: value }));
}

PAGES.runs = async function () {
  const names = await components();
  if (names.length === 0) return [el("p", { text: "No runs yet." })];
  const component = chosenComponent(names);
  const cols = (QS.get("cols") || DEFAULT_COLUMNS.join(",")).split(",").filter((c) => RUN_COLUMNS.includes(c));
  const sort = QS.get("sort") || "-created_at";
  const q = filterQuery();
  for (const k of ["q", "sort", "limit", "min_seq", "since", "until"]) if (QS.get(k)) q.set(k, QS.get(k));
  // Keyset paging: `next` (the API's token) forward; `offset` only for Prev (below).
  if (QS.get("next")) q.set("next", QS.get("next"));
  else if (QS.get("offset")) q.set("offset", QS.get("offset"));
  // The list and the facets are read at once: the page waits for the slowest, not their sum.
  const [page, sidebar] = await Promise.all([api(`/api/${enc(component)}/db/runs?${q}`), runFilters(component, names)]);
  const firstPage = !QS.get("next") && !Number(QS.get("offset"));
  window.runlakeLive = { filter: { component }, folded: (msg) => runsFolded(msg, component, firstPage) };
  const head = cols.map((c) => {
    const dir = sort === c ? "ascending" : sort === "-" + c ? "descending" : null;
    if (!SORTABLE.has(c)) return el("th", { scope: "col", text: c });
    const nextSort = sort === c ? "-" + c : c;
    return el("th", { scope: "col", "aria-sort": dir || "none" },
      el("a", { href: urlWith({ sort: nextSort, offset: null, next: null }), "data-sort": c, text: c + (dir === "ascending" ? " ▲" : dir === "descending" ? " ▼" : "") }));
  });
  const rows = page.items.map((r) => el("tr", { "data-run": r.run_id, "data-status": r.status }, cols.map((c) => {
    if (c === "run_id") return el("td", {}, el("a", { href: runHref(r.component, r.run_id), text: r.run_id }));
    if (c === "status") return el("td", { "data-field": "status" }, statusCell(r.status));
    if (c.endsWith("_at")) return el("td", { text: fmtTime(r[c]) });
    if (c === "duration_s") return el("td", { class: "num", text: fmtNum(r[c]) });
    return el("td", { text: r[c] ?? "—" });
  })));
  const compare = el("a", { href: "/compare?" + page.items.slice(0, MAX_COMPARE).map((r) => "run=" + enc(r.component + "/" + r.run_id)).join("&"), text: "Compare this page's first runs" });
  return [el("div", { class: "layout" }, el("aside", { class: "sidebar", "aria-label": "Filters" }, sidebar),
    el("div", {}, urlForm([el("div", { class: "inline" }, el("label", { for: "f-q" }, "Search runs",
      el("input", { id: "f-q", name: "q", type: "search", value: QS.get("q") || "", placeholder: "run id, name or model" })),
    el("button", { type: "submit", text: "Search" }))], {}, "search"),
    columnChooser(cols),
    table(head, rows, { "data-testid": "runs-table", "aria-label": `Runs of ${component}` }),
    runsPager(page), el("p", {}, compare)))];
};

// The runs list's filters from the URL, multi-valued (docs/facets.md: OR within a field,
// AND across fields); `except` leaves one field out (a facet counts without its own filter).
const FILTER_KEYS = ["status", "model", "hardware", "batch_id"];
// The API also splits these fields' values on commas (docs/facets.md): a value's own
// comma goes escaped, so `model=x,y` filters by the one model "x,y" the facet listed.
function apiValue(v) { return v.replaceAll(",", "\\,"); }
function filterQuery(except = null) {
  const q = new URLSearchParams();
  for (const k of FILTER_KEYS) if (k !== except) QS.getAll(k).forEach((v) => q.append(k, apiValue(v)));
  for (const [k, v] of QS.entries()) {
    if (k.startsWith("param.") && "param:" + k.slice(6) !== except) q.append(k, v);
  }
  QS.getAll("tag").forEach((t) => { if (except === null || "tag:" + t.split(":")[0] !== except) q.append("tag", t); });
  return q;
}

// Next follows the API's keyset token (stable while runs arrive); Prev steps back by
// offset (the page's `offset` counts the rows before it), so the URL holds one token at
// most rather than a stack of them (docs/dashboard.md).
function runsPager(page) {
  const { offset, limit, total, items } = page;
  const from = total && items.length ? offset + 1 : 0;
  const to = offset + items.length;
  const prev = offset > 0 ? el("a", { href: urlWith({ next: null, offset: offset - limit > 0 ? offset - limit : null }), rel: "prev", text: "← Previous" }) : null;
  const next = page.next ? el("a", { href: urlWith({ next: page.next, offset: null }), rel: "next", text: "Next →" }) : null;
  return el("nav", { class: "pager", "aria-label": "Pages" }, prev,
    el("span", { "data-testid": "page-info", text: `${from}–${to} of ${total}` }), next);
}

// A `folded` message on the runs page: a shown run's status changes in its row; a run
// not shown (a new one) redraws the first page, where it lands at the top.
function runsFolded(msg, component, firstPage) {
  let again = false;
  for (const r of msg.runs) {
    if (r.component !== component) continue;
    const row = MAIN.querySelector(`tr[data-run="${CSS.escape(r.run_id)}"]`);
    if (!row) { again = again || (firstPage && r.status !== null); continue; }
    const status = r.status ?? "deleted";
    row.dataset.status = status;
    row.classList.toggle("deleted", r.status === null);
    const cell = row.querySelector("td[data-field=status]");
    if (cell) cell.replaceChildren(statusCell(status));
  }
  return again;
}

// The filter sidebar: a facet per field (values with their run counts, several may be
// ticked) where the server has the facets route, plain fields otherwise. Tag and param
// facets are added by key (`facet=tag:team`, `facet=param:lr` in the URL).
const FACETS = [["status", "Status"], ["model", "Model"], ["hardware", "Hardware"], ["batch_id", "Batch"]];
function facetKey(field) {  // the URL parameter a facet's values filter by
  return field.startsWith("param:") ? "param." + field.slice(6) : field.startsWith("tag:") ? "tag" : field;
}
function facetChosen(field) {
  if (field.startsWith("tag:")) {
    const key = field.slice(4) + ":";
    return QS.getAll("tag").filter((t) => t.startsWith(key)).map((t) => t.slice(key.length));
  }
  return QS.getAll(facetKey(field));
}

async function runFilters(component, names) {
  const picker = [el("label", { for: "f-component", text: "Component" }),
    el("select", { id: "f-component", name: "component" }, names.map((n) => el("option", { value: n, selected: n === component, text: n })))];
  if (!ROUTES.has("/api/{component}/db/facets")) {
    return urlForm([el("h2", { text: "Filters" }), picker,
      selectField("Status", "status", STATUSES, QS.get("status")),
      inputField("Model", "model", QS.get("model")), inputField("Hardware", "hardware", QS.get("hardware")),
      inputField("Batch", "batch_id", QS.get("batch_id")), inputField("Tag (key:value)", "tag", QS.get("tag")),
      el("button", { type: "submit", text: "Apply filters" })]);
  }
  // A tag key is anything but ":" (the filter is key:value); a param path as the API's.
  const extra = [...new Set(QS.getAll("facet"))].filter((f) => /^(tag:[^:]+|param:[A-Za-z0-9_.-]+)$/.test(f));
  const fields = [...FACETS, ...extra.map((f) => [f, f.startsWith("tag:") ? `Tag ${f.slice(4)}` : `Param ${f.slice(6)}`])];
  // Each facet counts under every other filter, not its own: its other values stay offered.
  const read = (field) => {
    const q = filterQuery(field.startsWith("param:") || field.startsWith("tag:") || FILTER_KEYS.includes(field) ? field : null);
    q.set("field", field);
    q.set("limit", FACET_LIMIT);
    if (QS.get("min_seq")) q.set("min_seq", QS.get("min_seq"));  // after a delete: counts without it
    return api(`/api/${enc(component)}/db/facets?${q}`);
  };
  const results = await Promise.all(fields.map(([f]) => read(f)));
  const groups = fields.map(([field, label], i) => facetGroup(field, label, results[i], i));
  const form = el("form", { class: "stack", "data-testid": "facets" }, el("h2", { text: "Filters" }), picker, groups,
    el("button", { type: "submit", text: "Apply filters" }));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const changes = { component: data.get("component"), offset: null, next: null, tag: [] };
    for (const [field] of fields) if (!field.startsWith("tag:")) changes[facetKey(field)] = data.getAll(facetKey(field));
    // Tags of keys without a facet here stay; those with one are the boxes ticked.
    const faceted = extra.filter((f) => f.startsWith("tag:")).map((f) => f.slice(4) + ":");
    changes.tag = [...QS.getAll("tag").filter((t) => !faceted.some((k) => t.startsWith(k))), ...data.getAll("tag")];
    location.assign(urlWith(changes));
  });
  const add = el("form", { class: "inline add-facet" }, el("label", { for: "f-facet", text: "Add a facet (tag:key or param:path)" }),
    el("input", { id: "f-facet", name: "facet", type: "text", placeholder: "tag:team" }), el("button", { type: "submit", text: "Add facet" }));
  add.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = add.querySelector("input").value.trim();
    if (v) location.assign(urlWith({ facet: [...new Set([...QS.getAll("facet"), v])] }));
  });
  return [form, add];
}

// Checkbox ids by position (facet, value), not by value: a value may hold any character
// (spaces, quotes, unicode), and two values must never share an id or a label would tick
// the other's box. The value itself goes only into the box's `value`, unaltered.
function facetGroup(field, label, facet, n) {
  const key = facetKey(field);
  const chosen = facetChosen(field);
  const value = (v) => (field.startsWith("tag:") ? field.slice(4) + ":" + v : v);
  const shown = facet.items.map((i) => i.value);
  const items = [...facet.items, ...chosen.filter((v) => !shown.includes(v)).map((v) => ({ value: v, runs: 0 }))];
  const id = (k) => `f-facet-${n}-${k}`;
  return el("fieldset", { class: "facet", "data-facet": field }, el("legend", { text: label }),
    items.length === 0 ? el("p", { class: "muted", text: "no values" }) : null,
    items.map((i, k) => el("div", { class: "facet-value" },
      el("input", { type: "checkbox", id: id(k), name: key, value: value(i.value), checked: chosen.includes(i.value) }),
      el("label", { for: id(k) }, i.value, " ", el("span", { class: "muted", "data-field": "runs", text: `(${i.runs})` })))),
    facet.total_values > facet.items.length ? el("p", { class: "muted", text: `${facet.items.length} of ${facet.total_values} values` }) : null,
    facet.truncated ? el("p", { class: "muted", text: "counts so far (time budget reached)" }) : null);
}

function columnChooser(cols) {
  const boxes = RUN_COLUMNS.map((c) => el("label", {}, el("input", { type: "checkbox", name: "col", value: c, checked: cols.includes(c) }), " " + c));
  const form = el("form", {}, el("fieldset", {}, el("legend", { text: "Columns" }), boxes), el("button", { type: "submit", text: "Show columns" }));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const chosen = new FormData(form).getAll("col");
    location.assign(urlWith({ cols: chosen.join(",") || null }));
  });
  return el("details", {}, el("summary", { text: "Columns" }), form);
}

// The run page. Drawn once whole; then, while the stream names the run, refreshed part
// by part (runRefresh): the summary is read first, and only the parts whose data changed
// are read again or redrawn, in place, so the reader's open sections, filters, typed
// values, scroll and focus stay. A metric's chart (its buckets: the costliest read of the
// page for a long series) is read again only when that metric's count or last changed.
PAGES.run = async function () {
  const [, , component, runId] = location.pathname.split("/").map(decodeURIComponent);
  const base = `/api/${enc(component)}/db/run/${enc(runId)}`;
  const r = await api(base);
  const run = { component, runId, base, r };
  const ours = (x) => x.component === component && x.run_id === runId;
  window.runlakeLive = {
    filter: { component, run_id: runId },
    folded: (msg) => runFolded(run, msg.runs.filter(ours)),
    refresh: () => runRefresh(run),
  };
  document.title = `${runId} · runlake`;
  MAIN.querySelector("h1").textContent = `Run ${runId}`;
  // The sections' reads run at once: the page waits for the slowest, not their sum.
  const [metrics, logs, results] = await Promise.all([
    metricsSection(run), logsSection(base), resultsSection(base, r.results, component)]);
  return [el("div", { "data-part": "live-note", role: "status" }),
    section("Attributes", runAttrs(run)),
    CAN_DELETE ? el("p", {}, el("button", { type: "button", class: "danger", "data-testid": "delete-run", onclick: () => deleteRun(base, component) }, "Delete this run")) : null,
    part("params", runParams(r)), part("tags", runTags(r)), part("timeline", runTimeline(r)), part("steps", runSteps(r)),
    part("metrics", metrics), part("logs", logs), part("results", results), part("artifacts", runArtifacts(r)),
    section("Raw events", rawEvents(base, r.events))];
};

// A part of a page that a refresh may redraw on its own (`data-part`).
function part(name, ...content) { return el("div", { "data-part": name }, ...content); }
function setPart(name, ...content) { MAIN.querySelector(`[data-part="${name}"]`)?.replaceChildren(...content.flat().filter(Boolean)); }
function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

// A `folded` naming the run: refresh it (live.js calls the hook's `refresh`, at most once
// a second), unless it was deleted: then say so, and read nothing (it would 404).
function runFolded(run, mine) {
  if (!mine.length) return false;
  const last = mine[mine.length - 1];
  if (last.status !== null) return true;
  run.deleted = true;
  setPart("live-note", el("p", { role: "alert", class: "error", text: "This run was deleted." }));
  return false;
}

async function runRefresh(run) {
  if (run.deleted) return;
  let r;
  try {
    r = await api(run.base);
  } catch (e) {
    setPart("live-note", el("p", { role: "alert", class: "error", text: e.message }));
    return;
  }
  const old = run.r;
  run.r = r;
  setPart("live-note");
  for (const [k, v] of runAttrPairs(run)) {
    const dd = MAIN.querySelector(`dd[data-field="${k}"]`);
    if (dd && dd.textContent !== String(v ?? "—")) dd.textContent = v ?? "—";
  }
  const parts = [["params", "params", runParams], ["tags", "tags", runTags], ["steps", "steps", runSteps],
    ["artifacts", "artifacts", runArtifacts]];
  for (const [name, key, draw] of parts) if (!same(old[key], r[key])) setPart(name, draw(r));
  const times = (x) => [x.status, x.created_at, x.started_at, x.finished_at, x.error];
  if (!same(times(old), times(r))) setPart("timeline", runTimeline(r));
  const newestLog = (x) => (x.logs.length ? x.logs[x.logs.length - 1].seq : null);
  try {
    await Promise.all([
      refreshMetrics(run, old),
      newestLog(old) === newestLog(r) ? null : logsSection(run.base).then((s) => setPart("logs-page", [...s.querySelector("[data-part=logs-page]").childNodes])),
      same(old.results, r.results) ? null : refreshResults(run, old)]);
  } catch (e) {
    setPart("live-note", el("p", { role: "alert", class: "error", text: e.message }));
  }
  refreshRawEvents(run, old);
  MAIN.dataset.refreshes = String(Number(MAIN.dataset.refreshes || 0) + 1);  // tests wait on it
}

function runAttrPairs({ component, r }) {
  return [["component", component], ["status", r.status], ["model", r.model], ["hardware", r.hardware],
    ["batch", r.batch_id], ["name", r.name], ["error", r.error], ["created", fmtTime(r.created_at)],
    ["started", fmtTime(r.started_at)], ["finished", fmtTime(r.finished_at)], ["duration (s)", fmtNum(r.duration_s)], ["events", r.events]];
}
function runAttrs(run) {
  return el("dl", { class: "attrs" }, runAttrPairs(run).map(([k, v]) => [el("dt", { text: k }), el("dd", { "data-field": k, text: v ?? "—" })]));
}
function runParams(r) {
  const params = Object.entries(r.params || {});
  return section("Params", params.length ? table(["name", "value"], params.map(([k, v]) => el("tr", {}, el("th", { scope: "row", text: k }), el("td", { text: JSON.stringify(v) })))) : el("p", { class: "muted", text: "None." }));
}
function runTags(r) {
  const tags = Object.entries(r.tags || {});
  return tags.length ? section("Tags", table(["key", "value"], tags.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: v }))))) : null;
}
// From the run's own timestamps: the raw events (below, read when opened) hold every
// status event, but reading them costs a scan of the run's span of the log.
function runTimeline(r) {
  const timeline = [["created", r.created_at, null]];
  if (r.started_at) timeline.push(["running", r.started_at, null]);
  if (r.finished_at) timeline.push([r.status, r.finished_at, r.error]);
  return section("Status timeline", el("ol", { class: "timeline" }, timeline.map(([s, t, err]) =>
    el("li", {}, el("time", { text: fmtTime(t) }), " ", statusCell(s), err ? " — " + err : ""))));
}
function runSteps(r) {
  return r.steps.length ? section("Steps", table(["step", "status", "progress", "message", "at"], r.steps.map((s) => el("tr", { "data-step": s.step },
    el("td", { text: s.step }), el("td", { "data-field": "status", text: s.status }),
    el("td", {}, s.progress === null ? "—" : el("progress", { value: s.progress, max: 1, "aria-label": `${s.step} progress`, text: fmtRate(s.progress) })),
    el("td", { text: s.message || "" }), el("td", { text: fmtTime(s.ts) }))))) : null;
}
function runArtifacts(r) {
  return r.artifacts.length ? section("Artifacts", table(["name", "uri", "size (bytes)", "type"], r.artifacts.map((a) => el("tr", {},
    el("td", { text: a.name }), el("td", { text: a.uri || "—" }), el("td", { class: "num", text: fmtNum(a.size_bytes) }), el("td", { text: a.media_type || "—" }))))) : null;
}

// The run's raw events, first page, read from the log when the reader opens them.
function rawEvents(base, count) {
  const pre = el("pre", { "data-testid": "raw-events", text: "Loading…" });
  const details = el("details", { "data-part": "raw-events" }, el("summary", { text: rawSummary(count) }), pre);
  const read = async () => {
    try {
      const page = await api(`${base}/events?limit=100`);
      pre.textContent = page.items.map((e) => JSON.stringify(e)).join("\n");
    } catch (e) {
      pre.textContent = e.message;
    }
  };
  details.addEventListener("toggle", () => {
    if (!details.open || pre.dataset.loaded) return;
    pre.dataset.loaded = "1";
    read();
  });
  details.reread = read;
  return details;
}
function rawSummary(count) { return `${count} events (the first 100)`; }

// New events: the summary's count; the first 100, if shown, only while they were fewer
// (oldest first, so a full first page never changes).
function refreshRawEvents(run, old) {
  const details = MAIN.querySelector("[data-part=raw-events]");
  if (!details || old.events === run.r.events) return;
  details.querySelector("summary").textContent = rawSummary(run.r.events);
  if (details.open && old.events < 100) details.reread();
}

function metricsShown(metrics) {
  const chosen = QS.getAll("metric").filter((m) => metrics.some((x) => x.name === m));
  return (chosen.length ? chosen : metrics.slice(0, MAX_CHARTS).map((m) => m.name)).slice(0, MAX_CHARTS);
}
function metricRow(m) {
  return el("tr", { "data-metric": m.name },
    el("td", {}, el("a", { href: urlWith({ metric: m.name }), text: m.name })), el("td", { "data-field": "unit", text: m.unit || "" }),
    ["count", "last", "mean", "min", "max"].map((k) => el("td", { class: "num", "data-field": k, text: fmtNum(m[k]) })));
}

async function metricsSection({ component, runId, r }) {
  const metrics = r.metrics;
  if (!metrics.length) return section("Metrics", el("p", { class: "muted", text: "No metrics." }));
  const filter = el("input", { id: "metric-filter", type: "search", placeholder: "filter by name" });
  const tbl = table(["name", "unit", "count", "last", "mean", "min", "max"], metrics.map(metricRow), { "data-testid": "metrics-table" });
  filter.addEventListener("input", () => {
    for (const tr of tbl.tBodies[0].rows) tr.hidden = !metricMatches(tr.dataset.metric);
  });
  const charts = await Promise.all(metricsShown(metrics).map((m) => metricChart(component, runId, m)));
  return section("Metrics", el("label", { for: "metric-filter", "data-field": "metric-count", text: `Find a metric (${metrics.length})` }), filter, tbl,
    el("div", { class: "charts" }, charts));
}
function metricMatches(name) {
  const needle = (document.getElementById("metric-filter")?.value || "").toLowerCase();
  return name.toLowerCase().includes(needle);
}

// The metric table's rows change in place (new ones join in the summary's order, under
// the reader's filter); a chart is read again only if its metric's count or last changed.
async function refreshMetrics(run, old) {
  const { component, runId, r } = run;
  const tbl = MAIN.querySelector("[data-testid=metrics-table]");
  if (!tbl) {
    if (r.metrics.length) setPart("metrics", await metricsSection(run));
    return;
  }
  const before = new Map(old.metrics.map((m) => [m.name, m]));
  const body = tbl.tBodies[0];
  const rows = new Map([...body.rows].map((tr) => [tr.dataset.metric, tr]));  // one pass: a run may have thousands
  let prev = null;
  for (const m of r.metrics) {
    let row = rows.get(m.name);
    if (!row) {
      row = metricRow(m);
      row.hidden = !metricMatches(m.name);
      body.insertBefore(row, prev ? prev.nextSibling : body.firstChild);
    } else if (!same(before.get(m.name), m)) {
      for (const k of ["count", "last", "mean", "min", "max"]) row.querySelector(`[data-field=${k}]`).textContent = fmtNum(m[k]);
      row.querySelector("[data-field=unit]").textContent = m.unit || "";
    }
    prev = row;
  }
  MAIN.querySelector("[data-field=metric-count]").textContent = `Find a metric (${r.metrics.length})`;
  const box = MAIN.querySelector("[data-part=metrics] .charts");
  const now = new Map(r.metrics.map((m) => [m.name, m]));
  const kept = new Map([...box.children].map((f) => [f.dataset.metric, f]));
  const changed = (name) => { const a = before.get(name), b = now.get(name); return !a || a.count !== b.count || a.last !== b.last; };
  const charts = await Promise.all(metricsShown(r.metrics).map((name) =>
    (kept.has(name) && !changed(name) ? kept.get(name) : metricChart(component, runId, name))));
  box.replaceChildren(...charts);  // a kept chart is moved, not drawn again
}

async function refreshResults(run, old) {
  if (!old.results.total) {
    setPart("results", await resultsSection(run.base, run.r.results, run.component));
    return;
  }
  const s = await resultsSection(run.base, run.r.results, run.component);
  setPart("results-page", [...s.querySelector("[data-part=results-page]").childNodes]);
}

async function logsSection(base) {
  const q = new URLSearchParams({ limit: "100" });
  if (QS.get("log_level")) q.set("level", QS.get("log_level"));
  if (QS.get("log_offset")) q.set("offset", QS.get("log_offset"));
  const page = await api(`${base}/logs?${q}`);
  return section("Logs", urlForm([el("div", { class: "inline" }, selectField("Level", "log_level", LEVELS, QS.get("log_level")), el("button", { type: "submit", text: "Filter logs" }))], { log_offset: null }, "inline"),
    part("logs-page", table(["time", "level", "message"], page.items.map((l) => el("tr", {}, el("td", { text: fmtTime(l.ts) }), el("td", { text: l.level }), el("td", { text: l.message }))), { "data-testid": "logs-table" }),
      pager(page, "log_offset")));
}

async function resultsSection(base, counts, component) {
  if (!counts.total) return section("Results", el("p", { class: "muted", text: "No test results." }));
  const q = new URLSearchParams({ limit: "100" });
  if (QS.get("outcome")) q.set("outcome", QS.get("outcome"));
  if (QS.get("result_offset")) q.set("offset", QS.get("result_offset"));
  const page = await api(`${base}/results?${q}`);
  return section("Results",
    urlForm([el("div", { class: "inline" }, selectField("Outcome", "outcome", OUTCOMES, QS.get("outcome")), el("button", { type: "submit", text: "Filter results" }))], { result_offset: null }, "inline"),
    part("results-page", el("p", { "data-testid": "result-counts", text: OUTCOMES.map((o) => `${o} ${counts[o]}`).join(" · ") }),
      table(["test", "outcome", "duration (s)", "message"], page.items.map((t) => el("tr", { "data-test": t.test }, el("td", {}, ROUTES.has("/api/{component}/db/test/{name}") ? el("a", { href: testHref(component, t.test), text: t.test }) : t.test), el("td", { text: t.outcome }), el("td", { class: "num", text: fmtNum(t.duration_s) }), el("td", { text: t.message || "" }))), { "data-testid": "results-table" }),
      pager(page, "result_offset")));
}

async function deleteRun(base, component) {
  if (!confirm("Delete this run? Its events stay in the log; the run leaves every view.")) return;
  const done = await api(base, { method: "DELETE" });
  // min_seq: the runs page waits for the fold to pass the delete, so the run is gone.
  location.assign(`/runs?component=${enc(component)}&min_seq=${done.last_seq}`);
}

PAGES.models = async function () {
  const names = await components();
  if (names.length === 0) return [el("p", { text: "No runs yet." })];
  const component = chosenComponent(names);
  const [models, hardware] = await Promise.all([
    api(`/api/${enc(component)}/db/models/stats?limit=1000`), api(`/api/${enc(component)}/db/hardware/stats?limit=1000`)]);
  const statsTable = (label, key, page) => table([label, "runs", "success rate", "p50 duration (s)", "p95 duration (s)"], page.items.map((s) => el("tr", { ["data-" + key]: s[key] ?? "" },
    el("td", {}, key === "model" && s.model ? el("a", { href: "/model/" + s.model.split("/").map(enc).join("/"), text: s.model }) : (s[key] ?? "—")),
    el("td", { class: "num", text: s.runs }), el("td", { class: "num", "data-field": "success_rate", text: fmtRate(s.success_rate) }),
    el("td", { class: "num", text: fmtNum(s.duration_p50_s) }), el("td", { class: "num", text: fmtNum(s.duration_p95_s) }))));
  const out = [componentPicker(names, component)];
  const cells = await api(`/api/${enc(component)}/db/models/hardware?limit=1000`);
  out.push(section("Success rate per model × hardware", cells.items.length ? heatTable(cells.items.map((c) => ({
    model: c.model, hardware: c.hardware, value: c.success_rate, text: `${fmtRate(c.success_rate)} of ${c.runs}` })), "success-heatmap") : el("p", { text: "No runs." })));
  const metric = QS.get("metric");
  const days = QS.get("days") || "30";
  out.push(section("Metric p50 per model × hardware", urlForm([el("div", { class: "inline" }, el("input", { type: "hidden", name: "component", value: component }),
    inputField("Metric", "metric", metric), inputField("Days", "days", days, "number"), el("button", { type: "submit", text: "Show heatmap" }))], {}, "inline"),
  metric ? await heatmap(component, metric, days) : el("p", { class: "muted", text: "Choose a metric to see its p50 per model and hardware." })));
  out.push(section("Per model", statsTable("model", "model", models)), section("Per hardware", statsTable("hardware", "hardware", hardware)));
  return out;
};

async function heatmap(component, metric, days) {
  // trend=false: the heatmap draws each cell's p50, not the daily trend (most of the bytes).
  const perf = await api(`/api/${enc(component)}/db/performance?metric=${enc(metric)}&days=${enc(days)}&limit=1000&trend=false`);
  if (!perf.items.length) return el("p", { text: `No ${metric} points in the last ${days} days.` });
  return heatTable(perf.items.map((i) => ({ model: i.model, hardware: i.hardware, value: i.p50, text: fmtNum(i.p50) })), "heatmap");
}

// A model × hardware grid; each cell's shade scales with its value within the grid's range.
function heatTable(cells, testid) {
  const name = (v) => v ?? "—";
  const ms = [...new Set(cells.map((c) => name(c.model)))].sort();
  const hs = [...new Set(cells.map((c) => name(c.hardware)))].sort();
  const at = new Map(cells.map((c) => [`${name(c.model)}\u0000${name(c.hardware)}`, c]));
  const values = cells.map((c) => c.value).filter((v) => v !== null);
  const lo = Math.min(...values), hi = Math.max(...values);
  return table(["model \\ hardware", ...hs], ms.map((m) => el("tr", {}, el("th", { scope: "row", text: m }), hs.map((h) => {
    const c = at.get(`${m}\u0000${h}`);
    const td = el("td", { class: "cell num", "data-model": m, "data-hardware": h, text: c ? c.text : "" });
    if (c && c.value !== null) td.style.background = `rgba(11,92,173,${(0.1 + 0.6 * (hi > lo ? (c.value - lo) / (hi - lo) : 0.5)).toFixed(2)})`;
    return td;
  }))), { class: "heat", "data-testid": testid });
}

PAGES.model = async function () {
  const model = decodeURIComponent(location.pathname.slice("/model/".length));
  MAIN.querySelector("h1").textContent = `Model ${model}`;
  const m = await api("/api/db/model/" + model.split("/").map(enc).join("/"));
  const out = [el("div", { class: "cards" }, card("Runs", m.total.runs, "model-runs"), card("Success rate", fmtRate(m.total.success_rate), "model-success-rate"))];
  for (const [c, s] of Object.entries(m.components)) {
    out.push(section(`Component ${c}`, el("p", { text: `${s.runs} runs, success rate ${fmtRate(s.success_rate)}, p50 duration ${fmtNum(s.duration_p50_s)} s` }),
      table(["run", "status", "hardware", "created"], s.recent_runs.map((r) => el("tr", {}, el("td", {}, el("a", { href: runHref(r.component, r.run_id), text: r.run_id })), el("td", {}, statusCell(r.status)), el("td", { text: r.hardware ?? "—" }), el("td", { text: fmtTime(r.created_at) }))))));
  }
  return out;
};

PAGES.performance = async function () {
  const names = await components();
  if (names.length === 0) return [el("p", { text: "No runs yet." })];
  const component = chosenComponent(names);
  const q = new URLSearchParams({ days: QS.get("days") || "30", limit: "50" });
  for (const k of ["metric", "model", "hardware", "offset"]) if (QS.get(k)) q.set(k, QS.get(k));
  const perf = await api(`/api/${enc(component)}/db/performance?${q}`);
  const form = urlForm([el("div", { class: "inline" }, el("label", {}, "Component", el("select", { name: "component" }, names.map((n) => el("option", { value: n, selected: n === component, text: n })))),
    inputField("Metric", "metric", QS.get("metric")), inputField("Model", "model", QS.get("model")), inputField("Hardware", "hardware", QS.get("hardware")),
    inputField("Days", "days", q.get("days"), "number"), el("button", { type: "submit", text: "Show" }))], {}, "inline");
  const rows = perf.items.map((i) => el("tr", {}, el("td", { text: i.model ?? "—" }), el("td", { text: i.hardware ?? "—" }), el("td", { text: i.metric }),
    el("td", { class: "num", text: i.count }), ["p50", "p95", "p99", "mean", "min", "max"].map((k) => el("td", { class: "num", "data-field": k, text: fmtNum(i[k]) }))));
  const charts = perf.items.slice(0, MAX_CHARTS).filter((i) => i.trend.length).map((i) => chart(`${i.metric} · ${i.model ?? "—"} · ${i.hardware ?? "—"} (daily mean, min–max band)`,
    i.trend.map((d) => Date.parse(d.day) / 1000), [{ label: "mean", values: i.trend.map((d) => d.mean) }, { label: "min", values: i.trend.map((d) => d.min), stroke: "#9bb7d4" }, { label: "max", values: i.trend.map((d) => d.max), stroke: "#9bb7d4" }],
    { time: true, xLabel: "day", bands: [{ series: [3, 2], fill: "rgba(11,92,173,0.1)" }] }));
  return [form, el("p", { text: `${perf.since} to ${perf.until}` }),
    table(["model", "hardware", "metric", "points", "p50", "p95", "p99", "mean", "min", "max"], rows, { "data-testid": "performance-table" }),
    pager(perf), el("div", { class: "charts" }, charts)];
};

PAGES.batches = async function () {
  const names = await components();
  if (names.length === 0) return [el("p", { text: "No runs yet." })];
  const component = chosenComponent(names);
  const q = new URLSearchParams({ limit: "50" });
  if (QS.get("offset")) q.set("offset", QS.get("offset"));
  const page = await api(`/api/${enc(component)}/db/batches?${q}`);
  return [componentPicker(names, component),
    table(["batch", "description", "runs", "finished", "expected", "progress", ...STATUSES, "last seen"], page.items.map((b) => el("tr", { "data-batch": b.batch_id },
      el("td", {}, el("a", { href: `/runs?component=${enc(component)}&batch_id=${enc(b.batch_id)}`, text: b.batch_id })), el("td", { text: b.description || "" }),
      el("td", { class: "num", text: b.runs }), el("td", { class: "num", "data-field": "finished", text: b.finished }), el("td", { class: "num", text: b.expected_count ?? "—" }),
      el("td", {}, b.progress === null ? "—" : el("progress", { value: b.progress, max: 1, "aria-label": `${b.batch_id} progress`, text: fmtRate(b.progress) }), " ", el("span", { "data-field": "progress", text: b.progress === null ? "" : fmtRate(b.progress) })),
      STATUSES.map((s) => el("td", { class: "num", text: b.by_status[s] || 0 })), el("td", { text: fmtTime(b.last_seen) }))), { "data-testid": "batches-table" }),
    pager(page)];
};

PAGES.search = async function () {
  const query = QS.get("query") || "";
  const form = urlForm([el("div", { class: "inline" }, el("label", { for: "f-query" }, "Search every component",
    el("input", { id: "f-query", name: "query", type: "search", value: query })), el("button", { type: "submit", text: "Search" }))], {}, "inline");
  if (!query) return [form];
  const res = await api("/api/db/search?query=" + enc(query));
  const groups = Object.keys(res.results).sort();
  return [form, groups.length ? groups.map((c) => section(`${c} (${res.result_counts[c]})`,
    table(["run", "status", "model", "hardware", "name"], res.results[c].map((r) => el("tr", {}, el("td", {}, el("a", { href: runHref(r.component, r.run_id), text: r.run_id })),
      el("td", {}, statusCell(r.status)), el("td", { text: r.model ?? "—" }), el("td", { text: r.hardware ?? "—" }), el("td", { text: r.name ?? "" })))))) : el("p", { text: "Nothing found." })];
};

// `run=component/run_id`: the component is a slug (no "/"), so the first "/" ends it
// and the rest, slashes included, is the run id. A value without one names no run: it
// is reported, never split into a made-up component. Repeats count once.
const COMPONENT_SLUG = /^[a-z][a-z0-9_-]{0,63}$/;
function compareRefs(values) {
  const refs = [], bad = [];
  for (const s of new Set(values)) {
    const i = s.indexOf("/");
    const [c, r] = i < 0 ? ["", ""] : [s.slice(0, i), s.slice(i + 1)];
    if (COMPONENT_SLUG.test(c) && r) refs.push([c, r]); else bad.push(s);
  }
  return { refs: refs.slice(0, MAX_COMPARE), bad, dropped: Math.max(0, refs.length - MAX_COMPARE) };
}

PAGES.compare = async function () {
  const { refs, bad, dropped } = compareRefs(QS.getAll("run"));
  const form = el("form", { class: "inline" }, el("div", { class: "inline" }, el("label", { for: "f-run" }, "Add a run (component/run_id)", el("input", { id: "f-run", name: "run", type: "text" })), el("button", { type: "submit", text: "Add" })));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = form.querySelector("input").value.trim();
    if (v) location.assign(urlWith({ run: [...new Set([...QS.getAll("run"), v])] }));
  });
  const notes = [];
  if (bad.length) notes.push(el("p", { role: "alert", class: "error", "data-testid": "compare-bad", text: `Not component/run_id, left out: ${bad.join(", ")}` }));
  if (dropped) notes.push(el("p", { class: "muted", text: `Only the first ${MAX_COMPARE} runs are compared (${dropped} more named).` }));
  if (!refs.length) return [form, ...notes, el("p", { text: `Choose up to ${MAX_COMPARE} runs, e.g. from the runs page.` })];
  const runs = await Promise.all(refs.map(([c, r]) => api(`/api/${enc(c)}/db/run/${enc(r)}`)));
  // A function, not one array: a DOM node has one parent, so headers shared by the three
  // tables would end up in the last one only.
  const head = () => ["", ...runs.map((r) => el("th", { scope: "col" }, el("a", { href: runHref(r.component, r.run_id), text: `${r.component}/${r.run_id}` })))];
  const keys = [...new Set(runs.flatMap((r) => Object.keys(r.params || {})))].sort();
  const showAll = QS.get("all") === "1";
  const paramRows = keys.map((k) => {
    const vals = runs.map((r) => JSON.stringify((r.params || {})[k] ?? null));
    const differs = new Set(vals).size > 1;
    if (!differs && !showAll) return null;
    return el("tr", { class: differs ? "diff" : null, "data-param": k }, el("th", { scope: "row", text: k }), vals.map((v) => el("td", { text: v })));
  }).filter(Boolean);
  const metricNames = [...new Set(runs.flatMap((r) => r.metrics.map((m) => m.name)))].sort();
  const metricRows = metricNames.map((n) => el("tr", { "data-metric": n }, el("th", { scope: "row", text: n }), runs.map((r) => {
    const m = r.metrics.find((x) => x.name === n);
    return el("td", { class: "num", text: m ? fmtNum(m.last) : "—" });
  })));
  return [form, ...notes, section("Attributes", table(head(), ["status", "model", "hardware", "duration_s"].map((k) => el("tr", {}, el("th", { scope: "row", text: k }), runs.map((r) => el("td", { text: r[k] ?? "—" })))))),
    section(showAll ? "Params" : "Params that differ", el("p", {}, el("a", { href: urlWith({ all: showAll ? null : "1" }), text: showAll ? "Show only differences" : "Show all params" })),
      paramRows.length ? table(head(), paramRows, { "data-testid": "params-diff" }) : el("p", { text: "No params differ." })),
    section("Metrics (last value)", table(head(), metricRows, { "data-testid": "compare-metrics" }))];
};

// -- tests (docs/tests.md) -----------------------------------------------------------

function testHref(component, name) { return `/test/${enc(component)}/${name.split("/").map(enc).join("/")}`; }
function testApi(component, name) { return `/api/${enc(component)}/db/test/${name.split("/").map(enc).join("/")}`; }

PAGES.tests = async function () {
  const names = await components();
  if (names.length === 0) return [el("p", { text: "No runs yet." })];
  const component = chosenComponent(names);
  const base = `/api/${enc(component)}/db/tests?limit=${TOP_TESTS}`;
  const [flaky, failing] = await Promise.all([api(`${base}&flaky=true&sort=-flakiness`), api(`${base}&failing=true&sort=-failure_rate`)]);
  const list = (page, testid, empty) => (page.items.length === 0 ? el("p", { class: "muted", text: empty }) : [
    table(["test", "runs", "pass rate", "flaky runs", "flaky commits", "flakiness (last results)", "last outcome", "last seen"], page.items.map((t) => el("tr", { "data-test": t.test },
      el("td", {}, el("a", { href: testHref(component, t.test), text: t.test })), el("td", { class: "num", "data-field": "runs", text: t.runs }),
      el("td", { class: "num", "data-field": "pass_rate", text: fmtRate(t.pass_rate) }), el("td", { class: "num", "data-field": "flaky_runs", text: t.flaky_runs }),
      el("td", { class: "num", "data-field": "flaky_commits", text: t.flaky_commits }), el("td", { class: "num", "data-field": "flakiness", text: fmtRate(t.window.score) }),
      el("td", { "data-field": "last_outcome" }, outcomeCell(t.last_outcome)), el("td", { text: fmtTime(t.last_seen) }))), { "data-testid": testid }),
    el("p", { class: "muted", text: `${page.items.length} of ${page.total}` })]);
  return [componentPicker(names, component),
    section("Flaky tests", el("p", { class: "muted", text: "Passed and failed in the same run or on the same commit; by flakiness over their last results." }), list(flaky, "flaky-tests", "No flaky tests.")),
    section("Failing tests", el("p", { class: "muted", text: "Last result failed or errored; by failure rate." }), list(failing, "failing-tests", "No failing tests."))];
};

function outcomeCell(o) { return el("span", { class: "outcome-" + o, text: o }); }

PAGES.test = async function () {
  const rest = location.pathname.slice("/test/".length);
  const slash = rest.indexOf("/");
  const component = decodeURIComponent(rest.slice(0, slash));
  const name = rest.slice(slash + 1).split("/").map(decodeURIComponent).join("/");
  const n = QS.get("history") || "30";
  const t = await api(`${testApi(component, name)}?history=${enc(n)}`);
  document.title = `${name} · runlake`;
  MAIN.querySelector("h1").textContent = `Test ${name}`;
  const short = { passed: "P", failed: "F", error: "E", skipped: "S", xfailed: "x", xpassed: "X" };
  // Oldest left, newest right, as CI history strips read.
  const strip = el("ol", { class: "strip", "data-testid": "history-strip", "aria-label": `Last ${t.history.length} results, oldest first` },
    [...t.history].reverse().map((h) => el("li", { "data-run": h.run_id, "data-attempt": h.attempt, "data-outcome": h.outcome },
      el("a", { href: runHref(component, h.run_id), class: "outcome-" + h.outcome, title: `${h.run_id} attempt ${h.attempt}: ${h.outcome}`, text: short[h.outcome] || "?" }))));
  return [el("p", {}, "Component ", el("a", { href: "/tests?component=" + enc(component), text: component })),
    el("div", { class: "cards" }, card("Runs", t.runs, "test-runs"), card("Pass rate", fmtRate(t.pass_rate), "test-pass-rate"),
      card("Flaky runs", t.flaky_runs, "test-flaky-runs"), card("Flaky commits", t.flaky_commits, "test-flaky-commits"),
      card("Flakiness (last results)", fmtRate(t.window.score), "test-flakiness"), card("Attempts", t.attempts, "test-attempts")),
    section("History", urlForm([el("div", { class: "inline" }, inputField("Results shown", "history", n, "number"), el("button", { type: "submit", text: "Show" }))], {}, "inline"),
      strip, table(["run", "attempt", "outcome", "duration (s)", "commit", "worker", "message", "at"], t.history.map((h) => el("tr", { "data-run": h.run_id, "data-attempt": h.attempt },
        el("td", {}, el("a", { href: runHref(component, h.run_id), text: h.run_id })), el("td", { class: "num", text: h.attempt }), el("td", {}, outcomeCell(h.outcome)),
        el("td", { class: "num", text: fmtNum(h.duration_s) }), el("td", { text: h.commit ?? "—" }), el("td", { text: h.worker ?? "—" }), el("td", { text: h.message || "" }), el("td", { text: fmtTime(h.ts) }))), { "data-testid": "history-table" })),
    t.last_failure ? section("Last failure", el("p", {}, el("a", { href: runHref(component, t.last_failure.run_id), text: t.last_failure.run_id }), " at ", fmtTime(t.last_failure.ts)),
      el("pre", { text: t.last_failure.message || "" })) : null].filter(Boolean);
};

// -- boot -----------------------------------------------------------------------------

async function render() {
  const draw = PAGES[PAGE];
  if (!draw) return;
  window.runlakeLive = {};  // the page's draw sets its own live hook
  try {
    const parts = await draw();
    const h1 = MAIN.querySelector("h1");
    MAIN.replaceChildren(h1, ...parts.flat());
  } catch (e) {
    const h1 = MAIN.querySelector("h1");
    MAIN.replaceChildren(h1, el("p", { role: "alert", class: "error", text: e.message }));
  }
  MAIN.setAttribute("aria-busy", "false");
  performance.mark("runlake:drawn");  // bench/dashboard.py reads when the page was drawn
}
window.runlakeRefresh = render;  // live.js redraws the page when the stream says it changed
render().then(() => window.runlakeLiveStart && window.runlakeLiveStart());
