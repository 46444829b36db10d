// Small helpers of the console (an ES module, no build step): DOM, the hub's acks, times.

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c !== undefined && c !== null) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function uid() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Date.now().toString(36) + Math.random().toString(36).slice(2);
}

/** POST JSON to the hub; throws the contract's error message. */
export async function http(path, body, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const res = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((data.error && data.error.message) || res.statusText);
  return data;
}

/** Emit with an ack; resolves to its data, or throws an Error carrying the error code. */
export async function call(socket, event, data = {}) {
  const reply = await socket.timeout(10000).emitWithAck(event, data);
  if (!reply.ok) {
    const err = new Error(reply.error.message);
    err.code = reply.error.code;
    throw err;
  }
  return reply.data;
}

export function clock(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** "4 s", "2:05", "1:02:05": how long since `iso`. */
export function since(iso, now = Date.now()) {
  const s = Math.max(0, Math.floor((now - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s} s`;
  const pad = (n) => String(n).padStart(2, "0");
  const m = Math.floor(s / 60), h = Math.floor(m / 60);
  return h ? `${h}:${pad(m % 60)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

export const REASONS = {
  operator_offline: "operator went offline", transferred: "transferred", offline_message: "left a message",
};
