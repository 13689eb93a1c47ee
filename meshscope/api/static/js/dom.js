// DOM helpers: every value goes in through textContent or setAttribute, never as HTML.

export const $ = (sel, root) => (root || document).querySelector(sel);
export const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
export const SVG_NS = "http://www.w3.org/2000/svg";

/** el("td", {class: "mono", title: "x"}, child, "text", …) */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function dash(v) {
  return v === undefined || v === null || v === "" ? "-" : v;
}

/** A table: columns [{h, num?}], rows of cells (Node or value); returns the <table>. */
export function table(columns, rows, attrs) {
  const head = el("thead", null, el("tr", null, columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null }, c.h))));
  const body = el("tbody", null, rows.map((cells) => tableRow(cells, columns)));
  return el("table", attrs, head, body);
}

export function tableRow(cells, columns) {
  if (cells instanceof Node) return cells;
  return el("tr", null, cells.map((c, i) => (c instanceof Node && c.tagName === "TD") ? c
    : el("td", { class: columns && columns[i] && columns[i].num ? "num" : null }, c instanceof Node ? c : dash(c))));
}

const ZONE = (() => {
  const part = new Intl.DateTimeFormat("en", { timeZoneName: "short" }).formatToParts(new Date())
    .find((p) => p.type === "timeZoneName");
  return part ? part.value : Intl.DateTimeFormat().resolvedOptions().timeZone;
})();

function pad(n, w) { return String(n).padStart(w || 2, "0"); }

/** Epoch seconds as local "YYYY-MM-DD HH:MM:SS.mmm ZONE" (the zone always shown). */
export function fmtTime(t, withMs) {
  if (t === undefined || t === null) return "-";
  const d = new Date(t * 1000);
  const s = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:` +
    `${pad(d.getMinutes())}:${pad(d.getSeconds())}` + (withMs === false ? "" : "." + pad(d.getMilliseconds(), 3));
  return s + " " + ZONE;
}

export function timeEl(t, withMs) {
  return el("time", { datetime: t ? new Date(t * 1000).toISOString() : null }, fmtTime(t, withMs));
}

export function ago(t) {
  if (!t) return "never";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " days ago";
}

export function fmtMs(ms) {
  if (ms === undefined || ms === null) return "-";
  return ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : (ms >= 10 ? ms.toFixed(0) : ms.toFixed(1)) + " ms";
}

export function fmtPct(ratio) {
  return ratio === undefined || ratio === null ? "-" : (ratio * 100).toFixed(ratio && ratio < 0.01 ? 2 : 1) + " %";
}

export function codeClass(code) {
  return code ? "code" + Math.floor(code / 100) : "";
}

/** A value with a button that copies it. */
export function copyable(value, label) {
  const btn = el("button", { type: "button", class: "copy", "aria-label": "copy " + (label || value) }, "copy");
  btn.addEventListener("click", async (ev) => {
    ev.stopPropagation();
    try {
      await navigator.clipboard.writeText(value);
      btn.textContent = "copied";
    } catch (e) {
      btn.textContent = "select + Ctrl-C";
    }
    setTimeout(() => { btn.textContent = "copy"; }, 1500);
  });
  return el("span", { class: "copyable" }, el("span", { class: "mono" }, value), btn);
}

export function status(node, text, isError) {
  node.textContent = text;
  node.classList.toggle("error", !!isError);
}

/** A row that opens href on click, Enter or Space (its first link stays the keyboard target). */
export function clickableRow(tr, href) {
  tr.classList.add("clickable");
  tr.addEventListener("click", (ev) => {
    if (ev.target.closest("a, button, input")) return;
    location.hash = href;
  });
  return tr;
}

export function link(href, text, attrs) {
  return el("a", Object.assign({ href }, attrs || {}), text);
}

export function requestLink(rid, text) {
  return link("#/request/" + encodeURIComponent(rid), text || rid, { class: "mono" });
}

export function debounce(fn, ms) {
  let t = null;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}
