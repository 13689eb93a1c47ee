// Find: search access records by the filters, a histogram of the matches over time by status class
// (click a bar to narrow the range), the list of matches (click a row to open the request).
import { json } from "/static/js/api.js";
import {
  $, el, svg, clickableRow, codeClass, dash, debounce, fmtMs, fmtTime, requestLink, status, tableRow, timeEl,
} from "/static/js/dom.js";

const QUICK = [["5m", 300], ["15m", 900], ["1h", 3600], ["6h", 21600], ["24h", 86400], ["7d", 604800]];
const CLASSES = ["2xx", "3xx", "4xx", "5xx", "none"];
// form field → [label, autocomplete field of /api/search/values or null, input type]
const FIELDS = [
  ["id", "request id or trace id", null, "text"],
  ["service", "service (proxy cluster)", "node_cluster", "text"],
  ["proxy", "proxy (node id)", "node_id", "text"],
  ["cluster", "upstream cluster", "upstream_cluster", "text"],
  ["route", "route", "route_name", "text"],
  ["path", "path prefix", null, "text"],
  ["authority", "authority (host)", "authority", "text"],
  ["method", "method", "method", "text"],
  ["status", "status code", "response_code", "number"],
  ["flag", "response flag", "response_flags", "text"],
  ["min_ms", "minimum duration (ms)", null, "number"],
];
const PAGE = 100;

/** The time range of the route: an absolute start/end, or a quick range ending now (default 1 h). */
export function rangeOf(params) {
  const start = parseFloat(params.get("start"));
  const end = parseFloat(params.get("end"));
  if (Number.isFinite(start) && Number.isFinite(end) && end > start) return { start, end, quick: null };
  const quick = QUICK.find(([k]) => k === params.get("range")) || QUICK[2];
  const now = Date.now() / 1000;
  return { start: now - quick[1], end: now, quick: quick[0] };
}

export function apiFilters(params, range) {
  const out = { start: range.start.toFixed(3), end: range.end.toFixed(3) };
  for (const [name] of FIELDS) if (params.get(name)) out[name] = params.get(name);
  if (params.get("status_class")) out.status_class = params.get("status_class");
  if (params.get("retried") === "true") out.retried = "true";
  return out;
}

function toLocalInput(t) {
  const d = new Date(t * 1000 - new Date(t * 1000).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}

function hashFor(params) {
  const q = new URLSearchParams();
  for (const [k, v] of params) if (v !== "" && v !== null) q.set(k, v);
  return "#/find?" + q.toString();
}

export async function render(main, route, isCurrent) {
  const params = route.params;
  const range = rangeOf(params);
  const filters = apiFilters(params, range);
  main.append(el("h1", null, "Find requests"));

  const form = buildForm(params, range);
  const hist = el("section", { class: "panel", "aria-labelledby": "hist-h" },
    el("h2", { id: "hist-h" }, "Matches over time ", el("span", { id: "find-total", class: "muted" })),
    el("div", { class: "legend", "aria-hidden": "true" },
      CLASSES.map((c) => el("span", null, el("i", { style: `background: var(--c${c})` }), c))),
    svg("svg", { id: "histogram", role: "group", "aria-label": "matches over time; choose a bar to narrow the range" }));
  const statusLine = el("p", { id: "find-status", class: "status", role: "status" }, "searching …");
  const results = el("section", { class: "panel", "aria-labelledby": "res-h" },
    el("h2", { id: "res-h" }, "Requests ", el("span", { class: "muted" }, "(newest first)")), statusLine);
  main.append(form, hist, results);

  const list = json("/api/search", Object.assign({ limit: PAGE }, filters));
  const histogram = json("/api/search/histogram", filters);
  try {
    const [page, h] = await Promise.all([list, histogram]);
    if (!isCurrent()) return;
    drawHistogram($("#histogram"), h, params);
    $("#find-total").textContent = `${h.total.toLocaleString("en")} in ${fmtTime(h.start, false)} – ${fmtTime(h.end, false)}`;
    showResults(results, statusLine, page, filters, h.total);
  } catch (err) {
    if (isCurrent()) status(statusLine, err.message, true);
  }
}

function buildForm(params, range) {
  const inputs = FIELDS.map(([name, label, field, type]) => {
    const input = el("input", { id: "f-" + name, name, type, value: params.get(name) || "", autocomplete: "off",
      spellcheck: "false", list: field ? "dl-" + name : null, min: type === "number" ? "0" : null,
      step: name === "min_ms" ? "any" : null });
    const lbl = el("label", { for: "f-" + name, class: name === "id" ? "wide" : null }, label, input);
    if (field) {
      const dl = el("datalist", { id: "dl-" + name });
      lbl.append(dl);
      const fill = debounce(async () => {
        try {
          const values = await json("/api/search/values", { field, prefix: input.value, limit: 30 });
          dl.replaceChildren(...values.map((v) => el("option", { value: v })));
        } catch (e) { /* autocomplete is a help, not a must */ }
      }, 150);
      input.addEventListener("focus", fill);
      input.addEventListener("input", fill);
    }
    return lbl;
  });
  const sc = el("select", { id: "f-status_class", name: "status_class" },
    el("option", { value: "" }, "any"),
    [1, 2, 3, 4, 5].map((c) => el("option", { value: String(c), selected: params.get("status_class") === String(c) }, c + "xx")));
  const retried = el("input", { id: "f-retried", name: "retried", type: "checkbox", value: "true",
    checked: params.get("retried") === "true" });
  const start = el("input", { id: "f-start", type: "datetime-local", step: "1", value: toLocalInput(range.start) });
  const end = el("input", { id: "f-end", type: "datetime-local", step: "1", value: toLocalInput(range.end) });
  const quick = el("div", { class: "row quick", role: "group", "aria-label": "quick ranges" },
    el("span", { class: "muted" }, "last"),
    QUICK.map(([k]) => el("button", { type: "button", "aria-pressed": String(range.quick === k), "data-range": k,
      onclick: () => { const p = formParams(form); p.delete("start"); p.delete("end"); p.set("range", k); location.hash = hashFor(p); } }, k)));
  const form = el("form", { id: "find-form", class: "panel", role: "search", "aria-label": "filters" },
    el("div", { class: "filters" },
      el("label", { for: "f-start" }, "from (local time)", start),
      el("label", { for: "f-end" }, "to (local time)", end),
      inputs,
      el("label", { for: "f-status_class" }, "status class", sc),
      el("label", { class: "inline", for: "f-retried" }, retried, "retried only"),
      el("div", { class: "row" },
        el("button", { id: "find-submit", type: "submit", class: "primary" }, "Search"),
        el("a", { href: "#/find", id: "find-clear" }, "clear"))),
    quick);
  const startEdited = () => { start.dataset.edited = "1"; };
  start.addEventListener("change", startEdited);
  end.addEventListener("change", startEdited);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = formParams(form);
    if (start.dataset.edited || !range.quick) {
      const s = new Date(start.value).getTime() / 1000;
      const e = new Date(end.value).getTime() / 1000;
      if (Number.isFinite(s) && Number.isFinite(e) && e > s) {
        p.set("start", s.toFixed(3));
        p.set("end", e.toFixed(3));
      }
    } else {
      p.set("range", range.quick);
    }
    location.hash = hashFor(p);
  });
  return form;
}

function formParams(form) {
  const p = new URLSearchParams();
  for (const [name] of FIELDS) {
    const v = form.elements[name].value.trim();
    if (v) p.set(name, v);
  }
  if (form.elements.status_class.value) p.set("status_class", form.elements.status_class.value);
  if (form.elements.retried.checked) p.set("retried", "true");
  return p;
}

/** Stacked bars by status class; each bar is a link that narrows the range to it. */
export function drawHistogram(node, h, params) {
  const width = Math.max(node.clientWidth || 900, 300);
  const height = 130, left = 44, bottom = 18, top = 6;
  node.setAttribute("viewBox", `0 0 ${width} ${height}`);
  node.replaceChildren();
  const span = h.end - h.start;
  const x = (t) => left + ((t - h.start) / span) * (width - left - 4);
  const max = Math.max(1, ...h.bars.map((b) => Object.values(b.counts).reduce((a, c) => a + c, 0)));
  const y = (n) => (height - bottom - top) * (n / max);
  node.append(svg("line", { x1: left, x2: width, y1: height - bottom, y2: height - bottom }),
    svg("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, max.toLocaleString("en")),
    svg("text", { x: left - 4, y: height - bottom, "text-anchor": "end" }, "0"));
  for (let i = 0; i <= 5; i++) {
    const t = h.start + (span * i) / 5;
    node.append(svg("text", { x: x(t), y: height - 4, "text-anchor": i === 0 ? "start" : i === 5 ? "end" : "middle" },
      fmtTime(t, false).slice(span > 86400 ? 5 : 11, 16)));
  }
  const barW = Math.max(1, (h.bucket_s / span) * (width - left - 4) - 1);
  for (const b of h.bars) {
    const total = Object.values(b.counts).reduce((a, c) => a + c, 0);
    const p = new URLSearchParams(params);
    p.delete("range");
    p.set("start", String(Math.max(b.start, h.start)));
    p.set("end", String(Math.min(b.start + h.bucket_s, h.end)));
    const parts = CLASSES.filter((c) => b.counts[c]).map((c) => `${b.counts[c]} ${c}`).join(", ");
    const a = svg("a", { href: hashFor(p), "aria-label": `${fmtTime(b.start, false)}: ${total} requests (${parts}); narrow to this` });
    let base = height - bottom;
    for (const c of CLASSES) {
      const n = b.counts[c];
      if (!n) continue;
      const hgt = Math.max(1, y(n));
      base -= hgt;
      a.append(svg("rect", { class: "bar c" + c, x: x(Math.max(b.start, h.start)), y: base, width: barW, height: hgt },
        svg("title", null, `${fmtTime(b.start, false)} +${h.bucket_s} s: ${parts}`)));
    }
    node.append(a);
  }
}

function showResults(section, statusLine, page, filters, total) {
  const columns = [{ h: "time" }, { h: "service / proxy" }, { h: "request" }, { h: "code" }, { h: "flags" },
    { h: "attempts", num: true }, { h: "duration", num: true }, { h: "upstream" }, { h: "request id" }];
  const tbody = el("tbody");
  const tbl = el("table", { id: "find-results" },
    el("thead", null, el("tr", null, columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null }, c.h)))), tbody);
  const more = el("button", { id: "find-more", type: "button", hidden: true }, "more");
  let cursor = page.next_cursor;
  const add = (items) => {
    for (const r of items) tbody.append(resultRow(r));
    more.hidden = !cursor;
  };
  add(page.items);
  status(statusLine, page.items.length ? `${total.toLocaleString("en")} matching requests` :
    "no requests match: widen the time range or clear a filter");
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      const next = await json("/api/search", Object.assign({ limit: PAGE, cursor }, filters));
      cursor = next.next_cursor;
      add(next.items);
    } catch (err) {
      status(statusLine, err.message, true);
    }
    more.disabled = false;
  });
  section.append(tbl, more);
}

function resultRow(r) {
  const what = [r.method, (r.authority || "") + (r.path || "")].filter(Boolean).join(" ") || r.protocol;
  const rid = r.request_id || r.trace_id;
  const tr = tableRow([
    el("td", { class: "mono" }, timeEl(r.start_time)),
    el("td", { title: r.node_id }, dash(r.node_cluster || r.node_id)),
    el("td", { class: "ellipsis", title: what }, what),
    el("td", { class: codeClass(r.response_code) }, dash(r.response_code)),
    el("td", { class: "mono" }, r.response_flags.join(",") || "-"),
    el("td", { class: "num" }, r.attempt_count || 1),
    el("td", { class: "num" }, fmtMs(r.duration_ms)),
    el("td", { class: "ellipsis mono", title: r.upstream_cluster || "" }, dash(r.upstream_cluster)),
    el("td", null, rid ? requestLink(rid) : "-"),
  ]);
  if (rid) {
    tr.dataset.rid = rid;
    clickableRow(tr, "#/request/" + encodeURIComponent(rid));
  }
  return tr;
}
