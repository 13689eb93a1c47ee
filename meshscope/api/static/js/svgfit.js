// Server-drawn flow graphs (SVG sequence diagrams) shown inline, zoomable and scrollable, with every
// text fitted to the room it has: measured in the browser and cut with "…", the full text on hover.
import { call } from "/static/js/api.js";
import { el, status } from "/static/js/dom.js";

const UNSAFE = "script, foreignObject, iframe, object, embed, use[href^='http'], image";

/** Parse an SVG document from the server and return it as a node of this page, without anything active. */
export function safeSvg(text) {
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = doc.documentElement;
  if (root.nodeName !== "svg" || doc.querySelector("parsererror")) throw new Error("the flow graph is not an SVG");
  for (const bad of root.querySelectorAll(UNSAFE)) bad.remove();
  for (const node of [root, ...root.querySelectorAll("*")]) {
    for (const a of Array.from(node.attributes)) {
      const v = a.value.trim().toLowerCase();
      if (a.name.startsWith("on") || ((a.localName === "href") && !v.startsWith("#"))) node.removeAttribute(a.name);
    }
  }
  return document.importNode(root, true);
}

const EPS = 0.5;

function anchorOf(t) {
  const x = t.x.baseVal.length ? t.x.baseVal[0].value : 0;
  const anchor = t.getAttribute("text-anchor") || getComputedStyle(t).textAnchor || "start";
  return { x, anchor };
}

function isBackground(r, w, h) {
  return r.width.baseVal.value >= w - 1 && r.height.baseVal.value >= h - 1;
}

/** The horizontal room [lo, hi] a text may use: the box it sits in, the arrow it labels, or the space up to
 * the next shape on its row. */
export function roomOf(t, shapes, width) {
  const { x, anchor } = anchorOf(t);
  const b = t.getBBox();
  const cy = b.y + b.height / 2;
  let best = null;
  for (const s of shapes) {
    if (s.tagName !== "rect") continue;
    const rx = s.x.baseVal.value, ry = s.y.baseVal.value, rw = s.width.baseVal.value, rh = s.height.baseVal.value;
    if (x >= rx - EPS && x <= rx + rw + EPS && cy >= ry - EPS && cy <= ry + rh + EPS && (!best || rw < best[1] - best[0])) {
      best = [rx + 4, rx + rw - 4];
    }
  }
  if (!best && anchor === "middle") {  // a message label: the arrow under it
    const prev = t.previousElementSibling;
    if (prev && prev.tagName === "line") {
      const x1 = prev.x1.baseVal.value, x2 = prev.x2.baseVal.value;
      best = [Math.min(x1, x2) + 6, Math.max(x1, x2) - 10];
    }
  }
  if (!best) {  // free text: up to the next shape on its row, or the picture's edge
    let hi = width - 4;
    for (const s of shapes) {
      const sb = s.getBBox();
      const sLeft = s.tagName === "line" ? Math.min(s.x1.baseVal.value, s.x2.baseVal.value) : sb.x;
      const vertical = s.tagName === "line" && s.x1.baseVal.value === s.x2.baseVal.value;
      if (vertical) continue;  // lifelines cross every row
      if (sb.y <= b.y + b.height && sb.y + Math.max(sb.height, 1) >= b.y && sLeft > x + 2) hi = Math.min(hi, sLeft - 4);
    }
    best = [anchor === "middle" ? 4 : x, hi];
  }
  if (anchor === "middle") {  // centred: the room is symmetric around x
    const half = Math.max(0, Math.min(x - best[0], best[1] - x));
    return [x - half, x + half];
  }
  if (anchor === "end") return [best[0], x];
  return [x, best[1]];
}

/** Cut a text to width (binary search on its length), keeping the full text as its tooltip. */
export function fitText(t, width) {
  if (t.getComputedTextLength() <= width) return false;
  const given = t.querySelector("title");  // cut by the server already: its whole text is there
  const full = given ? given.textContent : t.textContent;
  if (given) given.remove();
  let lo = 0, hi = full.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    t.textContent = full.slice(0, mid) + "…";
    if (t.getComputedTextLength() <= width) lo = mid; else hi = mid - 1;
  }
  t.textContent = lo > 0 ? full.slice(0, lo) + "…" : "…";
  const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
  title.textContent = full;
  t.appendChild(title);
  t.classList.add("cut");
  return true;
}

export function fitTexts(root) {
  const w = root.viewBox.baseVal && root.viewBox.baseVal.width ? root.viewBox.baseVal.width : root.getBBox().width;
  const h = root.viewBox.baseVal && root.viewBox.baseVal.height ? root.viewBox.baseVal.height : root.getBBox().height;
  const shapes = Array.from(root.querySelectorAll("rect, line")).filter((s) => s.tagName !== "rect" || !isBackground(s, w, h));
  let cut = 0;
  for (const t of root.querySelectorAll("text")) {
    const [lo, hi] = roomOf(t, shapes, w);
    if (fitText(t, Math.max(0, hi - lo))) cut++;
  }
  return cut;
}

/** Fetch a flow graph into section: zoom buttons, a scrollable box, texts fitted. */
export async function flowGraph(section, url, id, isCurrent) {
  const line = el("p", { class: "status", role: "status" }, "drawing …");
  section.append(line);
  let text;
  try {
    text = await (await call(url)).text();
  } catch (err) {
    if (!isCurrent || isCurrent()) status(line, err.message, true);
    return null;
  }
  if (isCurrent && !isCurrent()) return null;
  const graph = safeSvg(text);
  graph.id = id;
  graph.setAttribute("role", "img");
  graph.setAttribute("aria-label", "flow graph: a sequence diagram, one column per host");
  const natural = { w: graph.width.baseVal.value, h: graph.height.baseVal.value };
  const box = el("div", { class: "graph-box", tabindex: "0", "aria-label": "flow graph; + and - zoom, arrow keys scroll" }, graph);
  let zoom = 1;
  const label = el("span", { class: "muted", "aria-live": "polite" }, "100 %");
  const setZoom = (z) => {
    zoom = Math.min(4, Math.max(0.2, z));
    graph.setAttribute("width", String(natural.w * zoom));
    graph.setAttribute("height", String(natural.h * zoom));
    label.textContent = Math.round(zoom * 100) + " %";
  };
  const tools = el("div", { class: "graph-tools", role: "toolbar", "aria-label": "zoom" },
    el("button", { type: "button", "aria-label": "zoom out", onclick: () => setZoom(zoom / 1.25) }, "−"),
    el("button", { type: "button", "aria-label": "zoom in", onclick: () => setZoom(zoom * 1.25) }, "+"),
    el("button", { type: "button", onclick: () => setZoom((box.clientWidth - 4) / natural.w) }, "fit width"),
    el("button", { type: "button", onclick: () => setZoom(1) }, "100 %"), label);
  box.addEventListener("keydown", (ev) => {
    if (ev.key === "+" || ev.key === "=") { setZoom(zoom * 1.25); ev.preventDefault(); }
    if (ev.key === "-") { setZoom(zoom / 1.25); ev.preventDefault(); }
  });
  line.remove();
  section.append(tools, box);
  const cut = fitTexts(graph);
  section.append(el("p", { class: "muted" }, cut ? `${cut} labels shortened to fit; hover one for its full text` : ""));
  return graph;
}
