// Map: the service graph of a time range (as Kiali draws it): workloads and upstream services as nodes,
// edges with request rate, 5xx ratio, retried share and p99 latency, coloured by health. Clicking a
// node or an edge opens its requests in Find. A table below says the same for keyboards and readers.
import { json } from "/static/js/api.js";
import { el, svg, fmtMs, fmtPct, fmtTime, link, status, table } from "/static/js/dom.js";
import { rangeOf } from "/static/js/find.js";
import { fitText } from "/static/js/svgfit.js";

const QUICK = ["5m", "15m", "1h", "6h", "24h", "7d"];
const NODE_W = 200, NODE_H = 40, COL_GAP = 230, ROW_GAP = 36, PAD = 24;

function rate(perSecond) {
  return perSecond >= 0.1 ? perSecond.toFixed(2) + "/s" : (perSecond * 60).toFixed(perSecond * 60 >= 1 ? 1 : 3) + "/min";
}

function findHash(range, params) {
  return "#/find?" + new URLSearchParams(Object.assign({ start: range.start.toFixed(3), end: range.end.toFixed(3) }, params));
}

/** Columns by longest path from the nodes nothing calls (bounded: a cycle cannot loop forever). */
export function layers(nodes, edges) {
  const rank = new Map(nodes.map((n) => [n.id, 0]));
  for (let pass = 0; pass < nodes.length; pass++) {
    let changed = false;
    for (const e of edges) {
      if (e.source === e.target) continue;
      const want = rank.get(e.source) + 1;
      if (want > rank.get(e.target) && want < nodes.length) { rank.set(e.target, want); changed = true; }
    }
    if (!changed) break;
  }
  return rank;
}

export async function render(main, route, isCurrent) {
  const range = rangeOf(route.params);
  main.append(el("h1", null, "Service map"),
    el("div", { class: "row quick panel", role: "group", "aria-label": "time range" },
      el("span", { class: "muted" }, "last"),
      QUICK.map((k) => el("button", { type: "button", "aria-pressed": String(range.quick === k),
        onclick: () => { location.hash = "#/map?range=" + k; } }, k)),
      el("span", { class: "muted" }, `${fmtTime(range.start, false)} – ${fmtTime(range.end, false)}`)));
  const line = el("p", { class: "status", role: "status" }, "loading …");
  main.append(line);
  let g;
  try {
    g = await json("/api/graph", { start: range.start.toFixed(3), end: range.end.toFixed(3) });
  } catch (err) {
    if (isCurrent()) status(line, err.message, true);
    return;
  }
  if (!isCurrent()) return;
  status(line, `${g.nodes.length} nodes, ${g.edges.length} edges · colour by 5xx ratio: ` +
    "green healthy, amber above 0.1 %, red above 20 %");
  if (!g.nodes.length) { main.append(el("p", { class: "empty" }, "no traffic in this range")); return; }
  const panel = el("section", { class: "panel", "aria-labelledby": "g-h" }, el("h2", { id: "g-h" }, "Graph"));
  main.append(panel);
  draw(panel, g, range);
  main.append(el("section", { class: "panel", "aria-labelledby": "e-h" }, el("h2", { id: "e-h" }, "Edges"),
    table([{ h: "from" }, { h: "to" }, { h: "upstream cluster" }, { h: "requests", num: true }, { h: "rate", num: true },
      { h: "5xx", num: true }, { h: "retried", num: true }, { h: "p99", num: true }, { h: "health" }],
    g.edges.map((e) => [e.source, e.target,
      el("td", { class: "mono" }, link(findHash(range, { service: e.source, cluster: e.cluster }), e.cluster)),
      e.requests, rate(e.rate), fmtPct(e.error_ratio), fmtPct(e.retried_ratio), fmtMs(e.p99_ms),
      el("td", null, el("span", { class: "pill " + e.health }, e.health))]), { id: "map-edges" })));
}

function draw(panel, g, range) {
  const rank = layers(g.nodes, g.edges);
  const columns = new Map();
  for (const n of g.nodes) columns.set(rank.get(n.id), [...(columns.get(rank.get(n.id)) || []), n]);
  const pos = new Map();
  let height = 0;
  for (const [r, ns] of columns) {
    ns.forEach((n, i) => pos.set(n.id, { x: PAD + r * (NODE_W + COL_GAP), y: PAD + 20 + i * (NODE_H + ROW_GAP) }));
    height = Math.max(height, PAD * 2 + 20 + ns.length * (NODE_H + ROW_GAP));
  }
  const width = PAD * 2 + (Math.max(...columns.keys()) + 1) * (NODE_W + COL_GAP) - COL_GAP;
  const root = svg("svg", { id: "map-svg", viewBox: `0 0 ${width} ${height}`, width, height, role: "group",
    "aria-label": "service graph; each node and edge is a link to its requests" },
  svg("defs", null, ["healthy", "degraded", "failing"].map((h) => svg("marker", { id: "arrow-" + h, viewBox: "0 0 10 10",
    refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
  svg("path", { d: "M0,0 L10,5 L0,10 z", class: "c" + { healthy: "2xx", degraded: "4xx", failing: "5xx" }[h] })))));
  panel.append(el("div", { style: "overflow:auto" }, root));
  const fanOut = new Map(), fanIn = new Map();
  for (const e of g.edges) {
    fanOut.set(e.source, (fanOut.get(e.source) || 0) + 1);
    fanIn.set(e.target, (fanIn.get(e.target) || 0) + 1);
  }
  for (const e of g.edges) {
    const a = pos.get(e.source), b = pos.get(e.target);
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    const back = x2 <= x1;
    const d = back ? `M${a.x + NODE_W / 2},${a.y + NODE_H} C${a.x + NODE_W / 2},${a.y + NODE_H + 60} ${b.x + NODE_W / 2},${b.y + NODE_H + 60} ${b.x + NODE_W / 2},${b.y + NODE_H}`
      : `M${x1},${y1} C${x1 + COL_GAP / 2},${y1} ${x2 - COL_GAP / 2},${y2} ${x2 - 2},${y2}`;
    // labels on the straight stretch next to the end that has fewer edges: a fan-out labels each edge at its
    // target's row, a fan-in at its source's row, so labels of one node's edges never pile up
    const nearTarget = fanOut.get(e.source) >= fanIn.get(e.target);
    const mx = back ? (a.x + b.x) / 2 + NODE_W / 2 : nearTarget ? x2 - COL_GAP / 2 + 4 : x1 + COL_GAP / 2 - 4;
    const my = back ? Math.max(a.y, b.y) + NODE_H + 50 : (nearTarget ? y2 : y1) - 12;
    const label = `${rate(e.rate)} · p99 ${fmtMs(e.p99_ms)}`;
    const label2 = `5xx ${fmtPct(e.error_ratio)} · retried ${fmtPct(e.retried_ratio)}`;
    // named by its <title> (an aria-label would have to repeat the shortened visible text)
    const edge = svg("a", { href: findHash(range, { service: e.source, cluster: e.cluster }), class: "edge " + e.health },
    svg("title", null, `${e.source} to ${e.target} (${e.cluster}): ${label}, ${label2}, ${e.health}`),
    svg("path", { d, "marker-end": `url(#arrow-${e.health})` }),
    svg("text", { x: mx, y: my - 8, "text-anchor": "middle" }, label),
    svg("text", { x: mx, y: my + 5, "text-anchor": "middle" }, label2));
    root.append(edge);
    if (!back) for (const t of edge.querySelectorAll("text")) fitText(t, COL_GAP - 24);
  }
  for (const n of g.nodes) {
    const p = pos.get(n.id);
    const inbound = g.edges.find((e) => e.target === n.id);
    const params = n.kind === "workload" ? { service: n.id } : { cluster: inbound ? inbound.cluster : n.id };
    const name = svg("text", { x: p.x + NODE_W / 2, y: p.y + 17, "text-anchor": "middle" }, n.id);
    const sub = svg("text", { x: p.x + NODE_W / 2, y: p.y + 32, "text-anchor": "middle", class: "muted", "font-size": "10" },
      `${n.kind} · ${n.inbound} in`);
    root.append(svg("a", { href: findHash(range, params), class: `node ${n.kind} ${n.health}` },
    svg("title", null, `${n.kind} ${n.id}: ${n.inbound} requests in, ${n.health}`),
    svg("rect", { x: p.x, y: p.y, width: NODE_W, height: NODE_H, rx: 6 }), name, sub));
    fitText(name, NODE_W - 12);
  }
}
