// One request: its hops in order, a waterfall of hops and spans on one time axis, the packet exchanges
// that carried it (linked to their capture), and the combined flow graph; ids copyable, a permanent link.
import { json } from "/static/js/api.js";
import {
  el, codeClass, copyable, dash, fmtMs, fmtTime, link, status, table, timeEl,
} from "/static/js/dom.js";
import { flowGraph } from "/static/js/svgfit.js";

const TRACE_ID = /^([0-9a-f]{16}|[0-9a-f]{32})$/i;

export async function render(main, route, isCurrent) {
  let id = route.arg || "";
  const head = el("h1", null, "Request ", el("span", { class: "mono" }, id));
  const line = el("p", { class: "status", role: "status" }, "loading …");
  main.append(head, line);
  if (TRACE_ID.test(id)) {  // a trace id: open the request its access records carry
    const page = await json("/api/search", { id, limit: 1 });
    if (!isCurrent()) return;
    const rid = page.items.length && page.items[0].request_id;
    if (!rid) { status(line, `no access record carries trace id ${id}`, true); return; }
    id = rid;
    head.replaceChildren("Request ", el("span", { class: "mono" }, rid));
  }
  let t;
  try {
    t = await json("/api/traces/" + encodeURIComponent(id));
  } catch (err) {
    if (isCurrent()) status(line, err.message, true);
    return;
  }
  if (!isCurrent()) return;
  status(line, `${t.hops.length} hops, ${t.spans.length} spans, ${t.exchanges.length} packet exchanges, ` +
    `${t.flows.length} flows`);
  const permanent = location.origin + location.pathname + "#/request/" + encodeURIComponent(t.request_id_norm);
  main.append(
    el("section", { class: "panel", "aria-labelledby": "ids-h" }, el("h2", { id: "ids-h" }, "Identity"),
      el("dl", { class: "ids", id: "request-ids" },
        el("dt", null, "request id"), el("dd", null, copyable(t.request_id_norm, "request id")),
        t.raw_request_ids.filter((r) => r !== t.request_id_norm).length
          ? [el("dt", null, "as logged"), el("dd", null, t.raw_request_ids.map((r) => copyable(r, "logged id " + r)))] : null,
        t.trace_ids.length ? [el("dt", null, "trace id"), el("dd", null, t.trace_ids.map((r) => copyable(r, "trace id " + r)))] : null,
        el("dt", null, "permanent link"), el("dd", null, copyable(permanent, "permanent link")))),
    hopsPanel(t), waterfallPanel(t), packetsPanel(t));
  const graph = el("section", { class: "panel", "aria-labelledby": "graph-h" },
    el("h2", { id: "graph-h" }, "Flow graph ", el("span", { class: "muted" }, "(proxy hops and packets, one diagram)")));
  main.append(graph);
  await flowGraph(graph, "/api/traces/" + encodeURIComponent(t.request_id_norm) + "/graph.svg", "request-graph", isCurrent);
}

function hopsPanel(t) {
  const rows = t.hops.map((h) => [
    h.index + 1, h.role,
    el("td", { class: "mono", title: h.node_id }, h.node_cluster || h.node_id),
    el("td", { class: "mono" }, timeEl(h.start_time)),
    el("td", { class: "ellipsis", title: (h.authority || "") + (h.path || "") },
      [h.method, (h.authority || "") + (h.path || "")].filter(Boolean).join(" ") || h.record.protocol),
    el("td", { class: codeClass(h.response_code) }, dash(h.response_code)),
    el("td", { class: "mono" }, h.response_flags.join(",") || "-"),
    h.attempt_count || 1,
    fmtMs(h.duration_ms),
    fmtMs(h.record.upstream_duration_ms),
    el("td", { class: "mono ellipsis", title: h.upstream_cluster || "" }, dash(h.upstream_cluster) + (h.upstream_host ? " (" + h.upstream_host + ")" : "")),
    el("td", { class: "mono" }, dash(h.request_id)),
    dash(h.linked_by),
  ]);
  return el("section", { class: "panel", "aria-labelledby": "hops-h" },
    el("h2", { id: "hops-h" }, "Hops ", el("span", { class: "muted" }, "(each proxy's access record, in order)")),
    rows.length ? table([{ h: "#" }, { h: "role" }, { h: "proxy" }, { h: "start" }, { h: "request" }, { h: "code" },
      { h: "flags" }, { h: "attempts", num: true }, { h: "duration", num: true }, { h: "upstream time", num: true },
      { h: "upstream" }, { h: "request id as logged" }, { h: "linked by" }], rows, { id: "hops" })
      : el("p", { class: "empty" }, "no proxy logged this request"));
}

/** Hops (access records) and spans as bars on one time axis, from the earliest start to the latest end. */
function waterfallPanel(t) {
  const items = [];
  for (const h of t.hops) {
    items.push({ label: `${h.role} ${h.node_cluster || h.node_id}`, start: h.start_time,
      dur: (h.duration_ms || 0) / 1000, cls: "hop" + (h.response_code >= 500 ? " err" : ""), what: "access log" });
  }
  const spans = [...t.spans].sort((a, b) => (a.timestamp || 0) - (b.timestamp || 0));
  for (const s of spans) {
    const err = (s.tags || {}).error !== undefined || /^5/.test((s.tags || {})["http.status_code"] || "");
    items.push({ label: `${(s.local_endpoint || {}).serviceName || "?"}: ${s.name || s.span_id}`,
      start: (s.timestamp || 0) / 1e6, dur: (s.duration || 0) / 1e6, cls: err ? "err" : "", what: "span " + s.span_id });
  }
  const section = el("section", { class: "panel", "aria-labelledby": "wf-h" },
    el("h2", { id: "wf-h" }, "Waterfall ", el("span", { class: "muted" }, "(access-log hops and spans, one time axis)")));
  if (!items.length) { section.append(el("p", { class: "empty" }, "no hops or spans")); return section; }
  const t0 = Math.min(...items.map((i) => i.start));
  const t1 = Math.max(...items.map((i) => i.start + i.dur), t0 + 1e-6);
  const total = t1 - t0;
  const grid = el("div", { class: "waterfall", id: "waterfall" });
  for (const i of items) {
    const left = ((i.start - t0) / total) * 100;
    const width = (i.dur / total) * 100;
    const text = `+${fmtMs((i.start - t0) * 1000)}, ${fmtMs(i.dur * 1000)}`;
    grid.append(
      el("div", { class: "lbl", title: i.label }, i.label),
      el("div", { class: "track", role: "img", "aria-label": `${i.label}: starts ${text}` },
        el("div", { class: "span " + i.cls, style: `left:${left}%;width:${width}%`, title: `${i.what}: ${text}` }),
        el("span", { class: "dur", style: width > 14 ? `left:calc(${left}% + 4px);color:#fff`
          : left + width > 70 ? `right:${100 - left}%;padding-right:4px` : `left:calc(${left + width}% + 4px)` },
        fmtMs(i.dur * 1000))));
  }
  grid.append(el("div", { class: "axis" }, el("span", null, fmtTime(t0)), el("span", null, "+" + fmtMs(total * 1000))));
  section.append(grid);
  return section;
}

function packetsPanel(t) {
  const rows = t.exchanges.map((e) => {
    const c = e.conn;
    const what = e.exchange_type === "http" ? `${e.method || ""} ${e.host || ""}${e.uri || ""} → ${e.status || "-"}`
      : e.exchange_type === "tls" ? "TLS ClientHello SNI " + (e.sni || "-") : e.exchange_type;
    const source = (t.captures || {})[c.capture];
    const capture = source ? link("#/captures/" + encodeURIComponent(source.upload), source.name, { title: "upload " + source.upload })
      : c.capture;
    return [capture, el("td", { class: "mono" }, `${c.src}:${c.sport} → ${c.dst}:${c.dport}`), what,
      el("td", { class: "mono" }, timeEl(e.request_time)), el("td", { class: "mono" }, dash((e.headers || {})["x-request-id"]))];
  });
  return el("section", { class: "panel", "aria-labelledby": "pk-h" },
    el("h2", { id: "pk-h" }, "Packets ", el("span", { class: "muted" }, "(exchanges from uploaded captures)")),
    rows.length ? table([{ h: "capture" }, { h: "connection" }, { h: "exchange" }, { h: "time" }, { h: "x-request-id on the wire" }],
      rows, { id: "packets" }) : el("p", { class: "empty" }, "no uploaded capture carries this request"));
}
