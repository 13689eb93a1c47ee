// Proxies: every proxy that has sent access records, its loss accounting (from its admin stats where
// configured), when it was last heard from, and a warning when it has gone quiet.
import { json } from "/static/js/api.js";
import { el, ago, dash, link, status, table, timeEl } from "/static/js/dom.js";

// a proxy that sent nothing for this long while others still send has probably stopped sending
export const QUIET_S = 300;

export function quietProxies(items, now) {
  const newest = Math.max(0, ...items.map((p) => p.last_seen || 0));
  return items.filter((p) => p.last_seen && newest - p.last_seen > QUIET_S && now - p.last_seen > QUIET_S);
}

export async function render(main, route, isCurrent) {
  main.append(el("h1", null, "Proxies"));
  const line = el("p", { class: "status", role: "status" }, "loading …");
  main.append(line);
  let body;
  try {
    body = await json("/api/proxies");
  } catch (err) {
    if (isCurrent()) status(line, err.message, true);
    return;
  }
  if (!isCurrent()) return;
  const quiet = new Set(quietProxies(body.items, Date.now() / 1000).map((p) => p.node_id));
  // a gap counts once it has settled: entries written in the last seconds may still be on their way
  const losing = (loss) => loss.gap_settled > 0 || loss.dropped > 0;
  const lossy = body.items.filter((p) => p.loss && (losing(p.loss) || !p.loss.reachable));
  status(line, `${body.items.length} proxies · ${quiet.size} quiet · ${lossy.length} losing access-log entries`);
  for (const id of quiet) {
    main.append(el("p", { class: "warnbox", role: "alert" }, el("b", null, "Stopped sending? "),
      el("span", { class: "mono" }, id), ` has sent nothing for more than ${QUIET_S / 60} minutes while other proxies still send.`));
  }
  for (const p of body.unmatched_admins || []) {
    main.append(el("p", { class: "warnbox" }, el("b", null, "No records from admin "), el("span", { class: "mono" }, p.admin),
      p.reachable ? ` (${p.written} entries written, ${p.dropped} dropped, none arrived)` : ` (unreachable: ${dash(p.error)})`));
  }
  const rows = body.items.map((p) => {
    const loss = p.loss;
    const state = quiet.has(p.node_id) ? ["warn", "quiet"] : loss && losing(loss) ? ["warn", "losing"] : ["healthy", "sending"];
    const tr = el("tr", { "data-node": p.node_id },
      el("td", null, el("span", { class: "pill " + state[0] }, state[1])),
      el("td", { class: "mono" }, link("#/find?" + new URLSearchParams({ proxy: p.node_id, range: "24h" }), p.node_id)),
      el("td", null, dash(p.node_cluster)),
      el("td", { class: "num" }, p.records.toLocaleString("en")),
      el("td", { class: "mono" }, timeEl(p.first_seen, false)),
      el("td", { class: "mono" }, timeEl(p.last_seen, false), el("span", { class: "muted" }, " (" + ago(p.last_seen) + ")")),
      el("td", { class: "num" }, loss ? loss.written : "-"),
      el("td", { class: "num" + (loss && loss.dropped ? " error" : "") }, loss ? loss.dropped : "-"),
      el("td", { class: "num" }, loss ? loss.arrived : "-"),
      el("td", { class: "num" + (loss && loss.gap_settled ? " error" : "") }, loss ? dash(loss.gap_settled) : "-"),
      el("td", { class: "num" }, loss ? loss.connect_failures : "-"),
      el("td", { class: "muted" }, loss ? (loss.reachable ? loss.admin : `${loss.admin} unreachable`) : "not configured"));
    return tr;
  });
  main.append(el("section", { class: "panel", "aria-labelledby": "px-h" }, el("h2", { id: "px-h" }, "Access-log senders"),
    rows.length ? table([{ h: "state" }, { h: "node id" }, { h: "cluster" }, { h: "records", num: true }, { h: "first seen" },
      { h: "last seen" }, { h: "written", num: true }, { h: "dropped", num: true }, { h: "arrived", num: true },
      { h: "lost uncounted", num: true }, { h: "connect failures", num: true }, { h: "admin" }], rows, { id: "proxies" })
      : el("p", { class: "empty" }, "no proxy has sent records yet"),
    el("p", { class: "muted" }, "written, dropped and connect failures come from each proxy's admin stats (settings.proxy_admins); " +
      "lost uncounted = written − dropped − arrived, by the written and dropped counts of at least 10 s ago " +
      "(newer entries may still be on their way; - until the account has a read that old).")));
}
