// Live updates: when the server has the stream (GET /api/stream, server-sent events), a
// `folded` message redraws the page from the API, at most once a second. Servers without
// it are detected from the OpenAPI document, so no request 404s and the console stays clean.
"use strict";

(async function live() {
  if (!window.runlakeRoutes || !window.EventSource) return;
  const routes = await window.runlakeRoutes();
  if (!routes.has("/api/stream")) return;
  const page = document.body.dataset.page;
  if (["search", "compare"].includes(page)) return;  // results the user asked for: kept still
  let pending = null;
  let last = 0;
  const redraw = () => {
    pending = null;
    last = Date.now();
    window.runlakeRefresh();
  };
  const source = new EventSource("/api/stream", { withCredentials: true });
  source.addEventListener("folded", () => {
    if (pending) return;
    pending = setTimeout(redraw, Math.max(0, 1000 - (Date.now() - last)));
  });
  source.onerror = () => {};  // the browser reconnects by itself
})();
