// Captures: upload with a progress bar for the transfer and one for the analysis, the list of uploads with
// status and damage, and one upload's captures, flows (filterable) and flow graph.
import { json, upload } from "/static/js/api.js";
import {
  $, el, ago, dash, link, requestLink, status, table, tableRow, timeEl,
} from "/static/js/dom.js";
import { flowGraph } from "/static/js/svgfit.js";

const FILTERS = [["host", "host or address"], ["nodeport", "NodePort"], ["sni", "SNI"], ["status", "HTTP status"],
  ["rid", "request id"]];

export async function render(main, route, isCurrent) {
  if (route.arg) return renderUpload(main, route, isCurrent);
  main.append(el("h1", null, "Captures"), uploadForm());
  const list = el("section", { class: "panel", "aria-labelledby": "up-h" }, el("h2", { id: "up-h" }, "Uploads"));
  main.append(list);
  const line = el("p", { class: "status", role: "status" }, "loading …");
  list.append(line);
  try {
    const items = await json("/api/pcaps", { limit: 100 });
    if (!isCurrent()) return;
    line.remove();
    list.append(items.length ? uploadsTable(items) : el("p", { class: "empty" }, "nothing uploaded yet"));
  } catch (err) {
    if (isCurrent()) status(line, err.message, true);
  }
}

function mb(bytes) {
  return bytes >= 1048576 ? (bytes / 1048576).toFixed(1) + " MB" : (bytes / 1024).toFixed(1) + " kB";
}

function damageOf(u) {
  const caps = u.captures || [];
  const notes = caps.flatMap((c) => c.damage.map((d) => `${c.name}: ${d}`));
  if (caps.some((c) => c.truncated) && !notes.length) notes.push("truncated");
  return notes;
}

function uploadsTable(items) {
  const rows = items.map((u) => {
    const damage = damageOf(u);
    const tr = tableRow([
      el("td", { class: "mono" }, timeEl(u.created, false)),
      el("td", null, link("#/captures/" + encodeURIComponent(u.id), u.files.map((f) => f.name).join(", ") || u.id)),
      mb(u.bytes),
      el("td", null, el("span", { class: "pill " + u.state }, u.state +
        (u.state === "analysing" && typeof u.progress === "number" ? " " + Math.round(u.progress * 100) + " %" : ""))),
      u.counts ? `${u.counts.flows ?? "-"} flows, ${u.counts.exchanges ?? "-"} exchanges, ${u.counts.packets ?? "-"} packets` : "-",
      el("td", { class: damage.length ? "error" : "muted" }, damage.length ? damage.join("; ") : (u.error || "none")),
    ]);
    tr.dataset.upload = u.id;
    return tr;
  });
  return table([{ h: "uploaded" }, { h: "files" }, { h: "size", num: true }, { h: "status" }, { h: "found" },
    { h: "damage" }], rows, { id: "uploads" });
}

function uploadForm() {
  const file = el("input", { id: "pcap-file", type: "file", multiple: true, accept: ".pcap,.pcapng,.cap,.gz,.zst,application/vnd.tcpdump.pcap" });
  const transfer = el("progress", { id: "transfer-progress", max: "1", value: "0", "aria-label": "transfer" });
  const analysis = el("progress", { id: "analysis-progress", max: "1", value: "0", "aria-label": "analysis" });
  const line = el("p", { id: "upload-status", class: "status", role: "status" });
  const bars = el("div", { id: "upload-progress", hidden: true },
    el("div", { class: "progress-row" }, el("span", null, "transfer"), transfer, el("span", { id: "transfer-text", class: "muted" })),
    el("div", { class: "progress-row" }, el("span", null, "analysis"), analysis, el("span", { id: "analysis-text", class: "muted" })));
  const form = el("form", { id: "upload-form", class: "panel", "aria-labelledby": "upl-h" },
    el("h2", { id: "upl-h" }, "Upload captures"),
    el("div", { class: "row" },
      el("label", { for: "pcap-file" }, "pcap or pcapng files (several are analysed together, e.g. both sides of a NAT hop)", file),
      el("button", { id: "upload", type: "submit", class: "primary" }, "Upload and analyse")),
    bars, line);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!file.files.length) { status(line, "choose a capture file first", true); return; }
    const data = new FormData();
    for (const f of file.files) data.append("file", f, f.name);
    bars.hidden = false;
    transfer.value = 0;
    analysis.value = 0;
    status(line, `uploading ${file.files.length} file(s) …`);
    try {
      const accepted = await upload("/api/pcaps", data, (done, total) => {
        transfer.value = done / total;
        $("#transfer-text").textContent = `${mb(done)} of ${mb(total)}`;
      });
      transfer.value = 1;
      const s = await watchAnalysis(accepted.id, analysis, line);
      if (s.state === "failed") { status(line, "analysis failed: " + (s.error || "unknown"), true); return; }
      location.hash = "#/captures/" + encodeURIComponent(accepted.id);
    } catch (err) {
      status(line, err.message, true);
    }
  });
  return form;
}

/** Poll an upload until analysed, moving the analysis bar (bounded: at most 30 minutes). */
async function watchAnalysis(id, bar, line) {
  const deadline = Date.now() + 30 * 60 * 1000;
  while (Date.now() < deadline) {
    const s = await json("/api/pcaps/" + encodeURIComponent(id));
    if (s.state === "done" || s.state === "failed") {
      bar.value = s.state === "done" ? 1 : bar.value;
      $("#analysis-text").textContent = s.state;
      return s;
    }
    if (typeof s.progress === "number") bar.value = s.progress;
    $("#analysis-text").textContent = s.state + (typeof s.progress === "number" ? " " + Math.round(s.progress * 100) + " %" : "");
    status(line, `upload ${id}: ${s.state} …`);
    await new Promise((ok) => setTimeout(ok, 250));
  }
  throw new Error("analysis did not finish within 30 minutes; see the uploads list");
}

async function renderUpload(main, route, isCurrent) {
  const id = route.arg;
  main.append(el("h1", null, "Upload ", el("span", { class: "mono" }, id)),
    el("p", null, link("#/captures", "← all uploads")));
  const line = el("p", { class: "status", role: "status" }, "loading …");
  main.append(line);
  let s = await json("/api/pcaps/" + encodeURIComponent(id));
  for (let i = 0; i < 7200 && (s.state === "queued" || s.state === "analysing"); i++) {
    status(line, s.state + (typeof s.progress === "number" ? " " + Math.round(s.progress * 100) + " %" : "") + " …");
    await new Promise((ok) => setTimeout(ok, 250));
    if (!isCurrent()) return;
    s = await json("/api/pcaps/" + encodeURIComponent(id));
  }
  if (!isCurrent()) return;
  if (s.state !== "done") { status(line, "analysis " + s.state + ": " + (s.error || ""), true); return; }
  status(line, `uploaded ${ago(s.created)}: ${s.counts.flows} flows, ${s.counts.exchanges} exchanges, ${s.counts.packets} packets`);
  main.append(el("section", { class: "panel", "aria-labelledby": "cap-h" }, el("h2", { id: "cap-h" }, "Captures"),
    table([{ h: "file" }, { h: "format" }, { h: "link types" }, { h: "packets", num: true }, { h: "connections", num: true },
      { h: "exchanges", num: true }, { h: "damage" }],
    s.captures.map((c) => [c.name, c.format, c.link_types.join(", "), c.packets, c.connections, c.exchanges,
      el("td", { class: c.damage.length || c.truncated ? "error" : "muted" },
        c.damage.length ? c.damage.join("; ") : (c.truncated ? "truncated" : "none"))]), { id: "captures" })));
  const body = await json("/api/pcaps/" + encodeURIComponent(id) + "/flows");
  if (!isCurrent()) return;
  const graph = el("section", { class: "panel", "aria-labelledby": "fg-h" },
    el("h2", { id: "fg-h" }, "Flow graph ", el("span", { id: "fg-which", class: "muted" })));
  const state = { flow: route.params.get("flow") || "" };
  const show = (flowId) => {
    state.flow = flowId;
    syncUrl(id, state);
    return drawGraph(graph, id, body.flows, state, show, isCurrent);
  };
  main.append(flowsPanel(body, route.params, id, state, (flowId) => {
    graph.scrollIntoView({ block: "start" });
    show(flowId).then(() => graph.querySelector(".graph-box")?.focus({ preventScroll: true }));
  }), graph);
  await drawGraph(graph, id, body.flows, state, show, isCurrent);
}

/** The upload view's URL: its flow filters and the flow whose graph is shown (every view has a URL). */
function syncUrl(id, state) {
  const q = new URLSearchParams(Object.entries(state.filters || {}).filter(([, v]) => v));
  if (state.flow) q.set("flow", state.flow);
  history.replaceState(null, "", "#/captures/" + encodeURIComponent(id) + (q.toString() ? "?" + q : ""));
}

const MAX_FLOWS_DRAWN = 20;  // the upload's whole graph draws its first 20 flows (decoders' render_svg)

/** The flow graph panel: one flow alone (state.flow) or the upload's graph of all flows. */
async function drawGraph(section, id, flows, state, show, isCurrent) {
  while (section.children.length > 1) section.lastChild.remove();
  const n = state.flow ? flows.findIndex((f) => f.id === state.flow) : -1;
  const which = section.querySelector("#fg-which");
  const base = "/api/pcaps/" + encodeURIComponent(id);
  let url = base + "/graph.svg";
  if (n >= 0) {
    which.textContent = `(flow ${n + 1} of ${flows.length})`;
    section.append(el("p", null, el("button", { id: "fg-all", type: "button", onclick: () => show("") }, "show all flows")));
    url = base + "/flows/" + encodeURIComponent(state.flow) + "/graph.svg";
  } else {
    which.textContent = !flows.length ? "(no flow stitched: the capture's exchanges)" :
      flows.length > MAX_FLOWS_DRAWN ? `(the first ${MAX_FLOWS_DRAWN} of ${flows.length} flows; ` +
      "a flow's graph button draws any one)" : `(all ${flows.length} flows)`;
  }
  const svg = await flowGraph(section, url, "upload-graph", isCurrent);
  if (svg && n >= 0) svg.dataset.flow = state.flow;
  return svg;
}

/** What a flow can be filtered by: its hosts, NodePorts, SNIs, HTTP statuses and request ids. */
export function flowFacts(flow, exchanges) {
  const hosts = new Set([flow.client, flow.server]);
  const nodeports = new Set(), snis = new Set(), statuses = new Set(), rids = new Set();
  if (flow.request_id) rids.add(flow.request_id);
  for (const h of flow.hops) {
    for (const v of [h.src, h.dst, h.src_name, h.dst_name]) if (v) hosts.add(v);
    if (h.nodeport) nodeports.add(String(h.nodeport));
    if (h.sni) snis.add(h.sni);
    for (const r of h.request_ids) rids.add(r);
  }
  for (const eid of flow.exchange_ids || []) {
    const e = exchanges[eid];
    if (!e) continue;
    if (e.status) statuses.add(String(e.status));
    if (e.sni) snis.add(e.sni);
    if (e.host) hosts.add(e.host);
  }
  return { host: [...hosts].filter(Boolean), nodeport: [...nodeports], sni: [...snis], status: [...statuses], rid: [...rids] };
}

function matches(facts, filters) {
  for (const [k, v] of Object.entries(filters)) {
    if (!v) continue;
    const needle = v.toLowerCase();
    const values = facts[k].map((x) => x.toLowerCase());
    if (k === "host" || k === "rid" || k === "sni" ? !values.some((x) => x.includes(needle)) : !values.includes(needle)) return false;
  }
  return true;
}

function flowsPanel(body, params, id, state, showGraph) {
  const exchanges = Object.fromEntries(body.exchanges.map((e) => [e.id, e]));
  const filters = Object.fromEntries(FILTERS.map(([k]) => [k, params.get(k) || ""]));
  state.filters = filters;
  const tbody = el("tbody");
  const count = el("span", { class: "muted", role: "status" });
  const rows = body.flows.map((f, i) => {
    const facts = flowFacts(f, exchanges);
    const tr = tableRow([
      i + 1,
      el("td", { class: "mono" }, `${dash(f.client)} ⇒ ${dash(f.server)}`),
      el("td", null, f.hops.map((h) => h.kind + (h.nodeport ? ` :${h.nodeport}` : "") + (h.sni ? ` (${h.sni})` : "")).join(" → ")),
      facts.status.join(", ") || "-",
      el("td", { class: "mono" }, timeEl(f.start)),
      el("td", null, f.request_id ? requestLink(f.request_id) : "-"),
      el("td", null, el("button", { type: "button", class: "copy", "data-graph": f.id, "aria-label": `graph of flow ${i + 1}`,
        onclick: () => showGraph(f.id) }, "graph")),
    ]);
    tr.dataset.flow = String(i);
    return { tr, facts };
  });
  const apply = () => {
    const shown = rows.filter((r) => matches(r.facts, filters));
    tbody.replaceChildren(...shown.map((r) => r.tr));
    count.textContent = `${shown.length} of ${rows.length} flows`;
    syncUrl(id, state);
  };
  const inputs = FILTERS.map(([k, label]) => {
    const input = el("input", { id: "flow-" + k, value: filters[k], autocomplete: "off", spellcheck: "false" });
    input.addEventListener("input", () => { filters[k] = input.value.trim(); apply(); });
    return el("label", { for: "flow-" + k }, label, input);
  });
  apply();
  return el("section", { class: "panel", "aria-labelledby": "fl-h" },
    el("h2", { id: "fl-h" }, "Flows ", count),
    el("div", { class: "filters", role: "search", "aria-label": "filter flows" }, inputs),
    el("table", { id: "flows" }, el("thead", null, el("tr", null,
      ["#", "client ⇒ server", "hops", "HTTP status", "start", "request", "graph"].map((h) => el("th", { scope: "col" }, h)))), tbody));
}
