// Live updates from GET /api/stream (server-sent events, docs/stream.md). After each fold
// commit the server sends a `folded` message: {seq, runs: [{component, run_id, status}]}
// (status null: the run was deleted). The page's hook (window.runlakeLive, set by app.js)
// patches what it can in place — a run's status cell, the home page's feed — and says
// whether the page must be read again; a page with a `refresh` hook reads again only what
// changed, others redraw whole; either at most once a second, one at a time. Servers without
// the stream are known from the shell's route list, so nothing probes and 404s.
"use strict";

window.runlakeLiveStart = async function live() {
  if (!window.runlakeRoutes || !window.EventSource) return;
  const routes = await window.runlakeRoutes();
  if (!routes.has("/api/stream")) return;
  const page = document.body.dataset.page;
  if (["search", "compare"].includes(page)) return;  // results the user asked for: kept still
  const hook = () => window.runlakeLive || {};
  let pending = null;
  let last = 0;
  let running = false;
  let again = false;
  // The page's own `refresh` (the run page: only what changed) or a whole redraw; one at
  // a time, so a slow read never overlaps the next (a message meanwhile queues one more).
  const redraw = async () => {
    pending = null;
    if (running) { again = true; return; }
    running = true;
    last = Date.now();
    try {
      await (hook().refresh || window.runlakeRefresh)();
    } finally {
      running = false;
    }
    if (again) { again = false; schedule(); }
  };
  const schedule = () => {
    if (!pending) pending = setTimeout(redraw, Math.max(0, 1000 - (Date.now() - last)));
  };
  // type=delete: the page needs the `folded` messages, not every event's frame (a
  // delete is rare, and its run comes in `folded` with status null anyway).
  const q = new URLSearchParams(hook().filter || {});
  q.set("type", "delete");
  const source = new EventSource("/api/stream?" + q, { withCredentials: true });
  // Following from here on: the tests wait for this before they post.
  source.addEventListener("caught_up", () => { document.body.dataset.live = "on"; });
  source.addEventListener("folded", (ev) => {
    const msg = JSON.parse(ev.data);
    if (!msg.runs || msg.runs.length === 0) return;
    const h = hook();
    if (h.folded ? h.folded(msg) : true) schedule();
  });
  source.onerror = () => { document.body.dataset.live = "off"; };  // the browser reconnects
};
