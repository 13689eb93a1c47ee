// meshscope web page: hash routes, one module per view, no build step (plain ES modules).
//   #/find?…filters     #/map?start&end     #/request/<id>     #/captures[/<upload>]     #/alerts     #/proxies
import { setToken, json } from "/static/js/api.js";
import { $, $$, el, status } from "/static/js/dom.js";

const VIEWS = {
  find: () => import("/static/js/find.js"),
  map: () => import("/static/js/map.js"),
  request: () => import("/static/js/request.js"),
  captures: () => import("/static/js/captures.js"),
  alerts: () => import("/static/js/alerts.js"),
  proxies: () => import("/static/js/proxies.js"),
};
const NAV_OF = { request: "find" };
let generation = 0;

/** "#/request/abc?x=1" → {view: "request", arg: "abc", params: URLSearchParams("x=1")} */
export function parseRoute(hash) {
  const raw = (hash || "").replace(/^#\/?/, "");
  const [path, qs] = raw.split("?", 2);
  const [view, ...rest] = path.split("/");
  return { view: VIEWS[view] ? view : "find", arg: rest.length ? decodeURIComponent(rest.join("/")) : null,
    params: new URLSearchParams(qs || "") };
}

async function route() {
  const mine = ++generation;
  const r = parseRoute(location.hash);
  for (const a of $$("nav a")) {
    if (a.dataset.view === (NAV_OF[r.view] || r.view)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const main = $("#view");
  const focused = document.activeElement && main.contains(document.activeElement) ? document.activeElement.id : null;
  const sameView = main.dataset.view === r.view;
  delete main.dataset.ready;
  try {
    const mod = await VIEWS[r.view]();
    if (mine !== generation) return;
    main.replaceChildren();
    main.dataset.view = r.view;
    // a view checks isCurrent() after each await, so a slow answer never draws over a newer view
    await mod.render(main, r, () => mine === generation);
  } catch (err) {
    if (mine !== generation) return;
    const p = el("p", { class: "status error", role: "alert" });
    status(p, err.message, true);
    main.replaceChildren(el("h1", null, "Something went wrong"), p);
  }
  if (mine !== generation) return;
  document.title = "meshscope · " + (main.querySelector("h1")?.textContent || r.view);
  main.dataset.ready = String(mine);  // the view has drawn everything it fetched (tests wait for it)
  performance.mark("meshscope:view-ready", { detail: r.view });  // for timing in the browser's tools
  // keyboard users keep their place when a view redraws itself, and start at the top of a new one
  const again = sameView && focused ? document.getElementById(focused) : null;
  if (again) again.focus({ preventScroll: true });
  else if (!sameView) main.focus({ preventScroll: true });
}

export async function refreshFiringBadge() {
  try {
    const { firingNow } = await import("/static/js/alerts.js");
    const body = await json("/api/alerts", { limit: 500 });
    const n = firingNow(body.items).length;
    const badge = $("#firing-count");
    badge.textContent = String(n);
    badge.hidden = n === 0;
    badge.setAttribute("aria-label", n + " firing");
  } catch (e) { /* the views show auth and store problems */ }
}

$("#goto").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = $("#goto-id").value.trim();
  if (id) location.hash = "#/request/" + encodeURIComponent(id);
});
$("#token").addEventListener("change", (ev) => {
  setToken(ev.target.value);
  route();
  refreshFiringBadge();
});
window.addEventListener("hashchange", route);
// a link to the view already shown draws it again (fresh data), as a reload would
document.addEventListener("click", (ev) => {
  const a = ev.target.closest && ev.target.closest("a[href^='#/']");
  if (a && a.getAttribute("href") === location.hash && !ev.defaultPrevented) route();
});
if (!location.hash) history.replaceState(null, "", "#/find");
// the badge waits for the first view: its request must not slow down what the user asked for
route().then(refreshFiringBadge);
