// meshscope web page: plain DOM, no build step. Every value goes in through textContent.
"use strict";

const $ = (sel) => document.querySelector(sel);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(tbody, cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c === null || c === undefined ? "-" : c));
  tbody.appendChild(tr);
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const token = localStorage.getItem("meshscope-token");
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function call(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const r = await fetch(path, opts);
  if (r.status === 401) {
    $("#token-box").hidden = false;
    throw new Error("this API needs a token: enter it at the top right");
  }
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return r;
}

async function showSvg(img, path) {
  // an <img> never runs script in an SVG; a blob URL lets the request carry the token
  const blob = await (await call(path)).blob();
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  img.dataset.url = URL.createObjectURL(blob);
  img.src = img.dataset.url;
}

function status(node, text, isError) {
  node.textContent = text;
  node.classList.toggle("error", !!isError);
}

function time(t) {
  return t ? new Date(t * 1000).toISOString().replace("T", " ").replace("Z", "") : "-";
}

async function searchTrace(rid) {
  const box = $("#trace");
  status($("#trace-status"), "searching " + rid + " …");
  box.hidden = true;
  try {
    const t = await (await call("/api/traces/" + encodeURIComponent(rid))).json();
    for (const id of ["#hops", "#spans", "#packets"]) $(id + " tbody").replaceChildren();
    for (const h of t.hops) {
      const req = [h.method, (h.authority || "") + (h.path || "")].filter(Boolean).join(" ");
      row($("#hops tbody"), [h.index + 1, h.role, el("td", h.node_id, "mono"), el("td", h.request_id, "mono"), req,
        (h.upstream_cluster || "-") + " (" + (h.upstream_host || "-") + ")",
        el("td", h.response_code, h.response_code >= 500 ? "code5" : ""), h.response_flags.join(",") || "-",
        h.attempt_count || 1, h.duration_ms]);
    }
    for (const s of t.spans) {
      row($("#spans tbody"), [el("td", s.trace_id + "/" + s.span_id, "mono"), s.span_kind,
        (s.local_endpoint || {}).serviceName, s.name, s.duration]);
    }
    for (const e of t.exchanges) {
      const c = e.conn;
      const what = e.exchange_type === "http" ? (e.method + " " + (e.host || "") + (e.uri || "") + " → " + (e.status || "-"))
        : "TLS ClientHello SNI " + (e.sni || "-");
      const source = (t.captures || {})[c.capture];
      const capture = source ? source.name + " (upload " + source.upload.slice(0, 8) + ")" : c.capture;
      row($("#packets tbody"), [capture, el("td", c.src + ":" + c.sport + " → " + c.dst + ":" + c.dport, "mono"),
        what, el("td", (e.headers || {})["x-request-id"], "mono")]);
    }
    status($("#trace-status"), `request ${t.request_id_norm}: ${t.hops.length} hops, ${t.spans.length} spans, ` +
      `${t.exchanges.length} packet exchanges, ${t.flows.length} flows`);
    box.hidden = false;
    await showSvg($("#trace-graph"), "/api/traces/" + encodeURIComponent(rid) + "/graph.svg");
  } catch (err) {
    status($("#trace-status"), err.message, true);
  }
}

async function waitForAnalysis(id) {
  for (;;) {
    const s = await (await call("/api/pcaps/" + id)).json();
    if (s.state === "done" || s.state === "failed") return s;
    const pct = typeof s.progress === "number" ? " " + Math.round(s.progress * 100) + "%" : "";
    status($("#upload-status"), "upload " + id + ": " + s.state + pct + " …");
    await new Promise((ok) => setTimeout(ok, 300));
  }
}

async function uploadCaptures(files) {
  $("#upload-result").hidden = true;
  if (!files.length) { status($("#upload-status"), "choose a capture file first", true); return; }
  const form = new FormData();
  for (const f of files) form.append("file", f, f.name);
  status($("#upload-status"), "uploading " + files.length + " file(s) …");
  try {
    const accepted = await (await call("/api/pcaps", { method: "POST", body: form })).json();
    await showUpload(accepted.id);
  } catch (err) {
    status($("#upload-status"), err.message, true);
  }
  loadUploads();
}

async function showUpload(id) {
  const result = $("#upload-result");
  result.hidden = true;
  try {
    const s = await waitForAnalysis(id);
    if (s.state === "failed") throw new Error(s.error || "analysis failed");
    $("#captures tbody").replaceChildren();
    for (const c of s.captures) {
      row($("#captures tbody"), [c.name, c.format, c.packets, c.exchanges,
        c.damage.length ? c.damage.join("; ") : (c.truncated ? "truncated" : "none")]);
    }
    const flows = await (await call("/api/pcaps/" + id + "/flows")).json();
    $("#flows").replaceChildren();
    for (const f of flows.flows) {
      const li = el("li", (f.client || "?") + " ⇒ " + (f.server || "?") + ": " +
        f.hops.map((h) => h.kind + " " + h.src + "→" + h.dst).join(" | "));
      if (f.request_id) {
        const a = el("a", " trace " + f.request_id);
        a.href = "#" + f.request_id;
        a.addEventListener("click", () => { $("#rid").value = f.request_id; searchTrace(f.request_id); });
        li.appendChild(a);
      }
      $("#flows").appendChild(li);
    }
    status($("#upload-status"), `upload ${s.id}: ${s.counts.flows} flows, ${s.counts.exchanges} exchanges, ` +
      `${s.counts.packets} packets`);
    result.hidden = false;
    await showSvg($("#upload-graph"), "/api/pcaps/" + id + "/graph.svg");
  } catch (err) {
    status($("#upload-status"), err.message, true);
  }
}

async function loadUploads() {
  try {
    const items = await (await call("/api/pcaps?limit=20")).json();
    $("#uploads").replaceChildren();
    for (const u of items) {
      const a = el("a", time(u.created) + "  " + u.files.map((f) => f.name).join(", ") + "  (" + u.state + ")");
      a.href = "#upload-" + u.id;
      a.addEventListener("click", (ev) => { ev.preventDefault(); showUpload(u.id); });
      const li = document.createElement("li");
      li.appendChild(a);
      $("#uploads").appendChild(li);
    }
  } catch (err) { /* the alerts list shows auth problems */ }
}

async function loadAlerts() {
  const tbody = $("#alerts tbody");
  try {
    const body = await (await call("/api/alerts?limit=100")).json();
    tbody.replaceChildren();
    if (!body.items.length) row(tbody, [el("td", "no alerts")]);
    for (const a of body.items) {
      row(tbody, [el("td", a.state, a.state), a.rule, a.group_key, a.observed, a.baseline, time(a.first_seen),
        time(a.last_seen), el("td", a.sample_request_ids.join(" "), "mono")]);
    }
  } catch (err) {
    tbody.replaceChildren();
    row(tbody, [el("td", err.message, "status error")]);
  }
}

$("#trace-form").addEventListener("submit", (ev) => { ev.preventDefault(); searchTrace($("#rid").value.trim()); });
$("#upload-form").addEventListener("submit", (ev) => { ev.preventDefault(); uploadCaptures($("#pcap-file").files); });
$("#alerts-refresh").addEventListener("click", loadAlerts);
$("#token").addEventListener("change", (ev) => {
  localStorage.setItem("meshscope-token", ev.target.value);
  loadAlerts();
  loadUploads();
});
loadAlerts();
loadUploads();
const hash = decodeURIComponent(location.hash.slice(1));
if (hash.startsWith("upload-")) showUpload(hash.slice(7));
else if (hash) { $("#rid").value = hash; searchTrace(hash); }
