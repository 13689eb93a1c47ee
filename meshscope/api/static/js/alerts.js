// Alerts: what is firing now, grouped by rule and group with its evidence; the history below. A group is
// firing only while its newest record says so: a firing record followed by a resolution is history.
import { json } from "/static/js/api.js";
import { el, dash, fmtTime, requestLink, status, table, timeEl } from "/static/js/dom.js";

const key = (a) => a.rule + "\u0000" + a.group_key;

/** The newest record of every (rule, group) whose state is firing. */
export function firingNow(items) {
  const newest = new Map();
  for (const a of items) {
    const k = key(a);
    const seen = newest.get(k);
    // the newest by last_seen; on a tie a resolution wins (it is written after the firing it ends)
    if (!seen || a.last_seen > seen.last_seen || (a.last_seen === seen.last_seen && a.state === "resolved")) newest.set(k, a);
  }
  return [...newest.values()].filter((a) => a.state === "firing");
}

function num(v) {
  return v === null || v === undefined ? "-" : Number.isInteger(v) ? String(v) : v.toFixed(3);
}

export async function render(main, route, isCurrent) {
  main.append(el("h1", null, "Alerts"));
  const line = el("p", { class: "status", role: "status" }, "loading …");
  main.append(line);
  let items;
  try {
    items = (await json("/api/alerts", { limit: 1000 })).items;
  } catch (err) {
    if (isCurrent()) status(line, err.message, true);
    return;
  }
  if (!isCurrent()) return;
  const firing = firingNow(items);
  const firingIds = new Set(firing.map((a) => a.id));
  const openKeys = new Set(firing.map(key));
  status(line, `${firing.length} firing now · ${items.length} records · times in your time zone`);
  const now = el("section", { class: "panel", id: "firing", "aria-labelledby": "now-h" },
    el("h2", { id: "now-h" }, "Firing now"));
  if (!firing.length) now.append(el("p", { class: "empty" }, "nothing is firing"));
  const byRule = new Map();
  for (const a of firing) byRule.set(a.rule, [...(byRule.get(a.rule) || []), a]);
  for (const [rule, alerts] of [...byRule.entries()].sort()) {
    now.append(el("h3", { class: "rule" }, rule, el("span", { class: "muted" }, ` · ${alerts.length} group(s)`)));
    for (const a of alerts.sort((x, y) => x.group_key.localeCompare(y.group_key))) now.append(alertCard(a));
  }
  const history = items.map((a) => {
    const still = firingIds.has(a.id);
    const state = a.state === "firing" && !still ? "was-firing" : a.state;
    const label = state === "was-firing" ? (openKeys.has(key(a)) ? "firing (earlier episode)" : "firing, since resolved") : a.state;
    return [el("td", null, el("span", { class: "pill " + state }, label)), a.rule, el("td", { class: "mono" }, a.group_key),
      num(a.observed), num(a.baseline), el("td", { class: "mono" }, timeEl(a.first_seen, false)),
      el("td", { class: "mono" }, timeEl(a.last_seen, false)),
      el("td", null, a.sample_request_ids.slice(0, 3).map((r) => [requestLink(r, r.slice(0, 8) + "…"), " "]))];
  });
  main.append(now, el("section", { class: "panel", "aria-labelledby": "hist-h" }, el("h2", { id: "hist-h" }, "History"),
    history.length ? table([{ h: "state" }, { h: "rule" }, { h: "group" }, { h: "observed", num: true },
      { h: "baseline", num: true }, { h: "first seen" }, { h: "last seen" }, { h: "sample requests" }], history, { id: "alert-history" })
      : el("p", { class: "empty" }, "no alerts recorded")));
}

function alertCard(a) {
  const severity = (a.labels || {}).severity || "";
  const ratio = a.baseline ? ` (${(a.observed / a.baseline).toFixed(1)}× the baseline)` : "";
  const [field, value] = a.group_key.split("=", 2);
  const find = value && ["upstream_cluster", "route_name", "authority", "node_cluster", "node_id"].includes(field)
    ? "#/find?" + new URLSearchParams({ [{ upstream_cluster: "cluster", route_name: "route", authority: "authority",
      node_cluster: "service", node_id: "proxy" }[field]]: value, start: String(a.first_seen - a.window_s),
    end: String(a.last_seen + 1) }) : null;
  return el("article", { class: "alert-group" + (severity === "warning" ? " warning" : ""), "data-rule": a.rule,
    "data-group": a.group_key },
  el("h3", null, el("span", { class: "pill firing" }, "firing"), " ", el("span", { class: "mono" }, a.group_key),
    severity ? el("span", { class: "muted" }, " · " + severity) : null),
  a.description ? el("p", null, a.description) : null,
  el("div", { class: "kv" },
    el("span", null, el("b", null, "observed "), num(a.observed), ratio),
    el("span", null, el("b", null, "baseline "), num(a.baseline)),
    el("span", null, el("b", null, "window "), a.window_s + " s"),
    el("span", null, el("b", null, "since "), fmtTime(a.first_seen, false)),
    el("span", null, el("b", null, "last seen "), fmtTime(a.last_seen, false))),
  el("p", null, el("b", null, "sample requests: "),
    a.sample_request_ids.length ? a.sample_request_ids.map((r) => [requestLink(r), " "]) : "-",
    find ? el("a", { href: find, class: "find-link" }, " · all requests of this group in the window") : null),
  Object.keys(a.labels || {}).length ? el("p", { class: "muted mono" }, Object.entries(a.labels).map(([k, v]) => `${k}=${dash(v)}`).join(" ")) : null);
}
