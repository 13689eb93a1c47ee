// The API from the page: one fetch wrapper that adds the bearer token and turns errors into messages.

const TOKEN_KEY = "meshscope-token";

export function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

export function setToken(token) {
  localStorage.setItem(TOKEN_KEY, token);
}

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export async function call(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = authHeaders(opts.headers);
  const r = await fetch(path, opts);
  if (r.status === 401) {
    document.getElementById("token-box").hidden = false;
    throw new ApiError("this API needs a token: enter it at the top right", 401);
  }
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail; } catch (e) { /* not JSON */ }
    throw new ApiError(typeof detail === "string" ? detail : JSON.stringify(detail), r.status);
  }
  return r;
}

export async function json(path, params) {
  return (await call(path + query(params))).json();
}

export function query(params) {
  if (!params) return "";
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "" && v !== false) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

/** POST a form with XMLHttpRequest: fetch cannot report upload progress. */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) onProgress(ev.loaded, ev.total); };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError((body && typeof body.detail === "string" && body.detail) || xhr.statusText, xhr.status));
    };
    xhr.onerror = () => reject(new ApiError("upload failed: the server did not answer", 0));
    xhr.send(form);
  });
}
