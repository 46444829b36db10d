// The operator console (an ES module served by the hub, no build step).
// Talks to the hub with the official socket.io-client (/vendor/socket.io.min.js):
// /operators for presence, the queue, transfers, notes and canned replies;
// /dialogs to converse in, transfer, close and read the dialogs one holds.
import { $, el, uid, http, call, clock, since, REASONS } from "./lib.js";

const REFRESH_MS = 10 * 60 * 1000; // access tokens live 15 minutes by default
const KEY = "hub.console.";
let heartbeatMs = 15000; // until the hub says (presence.heartbeat_interval: HUB_PRESENCE_TIMEOUT / 3)

const stored = (name, fallback) => JSON.parse(sessionStorage.getItem(KEY + name) || "null") ?? fallback;
const store = (name, value) => sessionStorage.setItem(KEY + name, JSON.stringify(value));

const state = {
  token: sessionStorage.getItem(KEY + "token"),
  refresh: sessionStorage.getItem(KEY + "refresh"),
  user: stored("user", null),
  current: stored("current", null), // the open dialog survives a reload
  unread: new Map(stored("unread", [])), // dialog_id -> messages not seen yet
  ops: null, dlg: null, timers: [],
  versions: new Map(), // dialog_id -> highest version seen (stale events are dropped)
  seen: new Set(), // message and note ids rendered in the open dialog
  heldDeltas: null, // while a dialog opens: its deltas, shown after the text so far (openDialog)
  streams: new Map(), // stream id -> the growing bot reply shown in the open dialog
  queue: [], chats: [], operators: [], canned: [], offers: new Map(),
  mode: "reply",
  holding: false, // whether the caller holds the open dialog
  alerts: localStorage.getItem(KEY + "alerts") === "on",
};
const me = () => state.user && state.user.id;

// --- log in / out ---------------------------------------------------------------------

function keep(login) {
  state.token = login.access_token;
  state.refresh = login.refresh_token;
  if (login.user) state.user = login.user;
  sessionStorage.setItem(KEY + "token", state.token);
  sessionStorage.setItem(KEY + "refresh", state.refresh);
  store("user", state.user);
}

function forget() {
  for (const key of ["token", "refresh", "user", "current", "unread"]) sessionStorage.removeItem(KEY + key);
  Object.assign(state, { token: null, refresh: null, user: null, current: null, unread: new Map() });
}

function showView(loggedIn) {
  $("login-view").hidden = loggedIn;
  $("console-view").hidden = !loggedIn;
  $("me").hidden = !loggedIn;
  $("reconnecting").hidden = true;
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    const login = await http("/auth/login", { email: $("email").value, password: $("password").value });
    if (!["operator", "admin"].includes(login.user.role)) throw new Error("this account is not an operator");
    keep(login);
    $("password").value = "";
    start();
  } catch (err) {
    $("login-error").textContent = err.message;
  }
});

$("logout").addEventListener("click", async () => {
  try { await call(state.ops, "presence:update", { status: "offline" }); } catch (_) { /* leaving anyway */ }
  try {
    await http("/auth/logout", { refresh_token: state.refresh }, state.token);
  } catch (_) { /* leaving anyway */ }
  stop();
  forget();
  setConnection("offline", "offline");
  showView(false);
  $("email").focus();
});

async function refreshToken() {
  try {
    keep(await http("/auth/refresh", { refresh_token: state.refresh }));
    return true;
  } catch (err) {
    $("chat-error").textContent = "session expired, log in again: " + err.message;
    return false;
  }
}

// --- connecting ---------------------------------------------------------------------------

function start() {
  showView(true);
  $("who").textContent = state.user ? state.user.email : "";
  $("alerts").checked = state.alerts;
  const opts = { auth: (cb) => cb({ token: state.token }) };
  state.ops = io("/operators", opts);
  state.dlg = io("/dialogs", opts);
  const ops = state.ops, dlg = state.dlg;

  ops.on("connect", async () => {
    $("reconnecting").hidden = true;
    await heartbeat();
    await Promise.all([loadQueue(), loadChats(), loadOperators(), loadCanned()]);
  });
  ops.on("disconnect", (reason) => {
    setConnection("reconnecting…", "disconnected");
    if (reason !== "io client disconnect") $("reconnecting").hidden = false;
  });
  // A refused connection is not retried by the client: refresh the token once, then retry.
  for (const socket of [ops, dlg]) {
    socket.on("connect_error", async (err) => {
      setConnection("error: " + err.message, "disconnected");
      $("reconnecting").hidden = false;
      if (err.data && err.data.code === "unauthorized" && state.refresh && await refreshToken()) socket.connect();
    });
  }
  dlg.on("connect", async () => { if (state.current) await openDialog(state.current, true); });

  ops.on("handoff:requested", (ev) => {
    if (!fresh(ev.dialog_id, ev.version)) return;
    loadQueue().then(() => alertNew(ev.dialog_id));
  });
  ops.on("handoff:accepted", (ev) => {
    if (!fresh(ev.dialog_id, ev.version)) return;
    loadQueue();
    const mine = ev.operator_id === me(), had = state.chats.some((d) => d.dialog_id === ev.dialog_id);
    if (mine && !had) notify("A dialog was assigned to you", `Dialog ${ev.dialog_id}`);
    if (mine || had) loadChats();
  });
  ops.on("handoff:released", (ev) => {
    if (!fresh(ev.dialog_id, ev.version)) return;
    loadQueue();
    if (ev.operator_id === me()) loadChats();
  });
  ops.on("dialog:closed", (ev) => {
    loadQueue();
    if (state.chats.some((d) => d.dialog_id === ev.dialog_id)) loadChats();
  });
  ops.on("queue:updated", (ev) => { $("queue-size").textContent = ev.size; });
  ops.on("presence:changed", () => loadOperators());
  ops.on("message:added", (ev) => {
    if (ev.dialog_id === state.current) return;
    state.unread.set(ev.dialog_id, (state.unread.get(ev.dialog_id) || 0) + 1);
    store("unread", [...state.unread]);
    renderChats();
  });
  ops.on("note:added", (ev) => { if (ev.dialog_id === state.current) addNote(ev.note); });
  ops.on("canned:changed", () => loadCanned());
  ops.on("transfer:offered", (ev) => {
    if (ev.to_operator_id === me()) { state.offers.set(ev.dialog_id, ev); renderOffers(); alertOffer(ev); }
    if (ev.from_operator_id === me() && ev.dialog_id === state.current) {
      addSystem(`Offered to ${operatorName(ev.to_operator_id)}; waiting for them to accept.`);
    }
  });
  ops.on("transfer:returned", (ev) => {
    if (state.offers.delete(ev.dialog_id)) renderOffers();
    if (ev.operator_id === me() && ev.dialog_id === state.current) {
      addSystem(`${operatorName(ev.to_operator_id)} did not take it (${ev.reason}): it stays with you.`);
    }
  });

  dlg.on("message:added", (ev) => { if (ev.dialog_id === state.current) addMessage(ev.message); });
  dlg.on("message:delta", (ev) => {
    if (state.heldDeltas) state.heldDeltas.push(ev); // a dialog is opening: after its text so far
    else if (ev.dialog_id === state.current) growStream(ev);
  });
  dlg.on("handoff:status", (ev) => {
    if (!fresh(ev.dialog_id, ev.version)) return;
    if (ev.dialog_id === state.current) showStatus(ev.status, ev.operator_id);
  });
  dlg.on("dialog:closed", (ev) => {
    if (ev.dialog_id === state.current) { addSystem(`The dialog was closed by the ${ev.closed_by}.`); showClosed(); }
  });
  dlg.on("typing:indicator", (ev) => {
    if (ev.dialog_id === state.current && ev.sender === "visitor") {
      $("typing").textContent = ev.is_typing ? "The visitor is typing…" : "";
    }
  });

  state.timers.push(setInterval(refreshToken, REFRESH_MS));
  state.timers.push(setInterval(tick, 1000));
  scheduleHeartbeat();
}

function stop() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  clearTimeout(state.heartbeatTimer);
  if (state.ops) state.ops.close();
  if (state.dlg) state.dlg.close();
  state.ops = state.dlg = null;
  closeDialog();
}

function fresh(dialogId, version) {
  if (version === undefined || version === null) return true;
  const seen = state.versions.get(dialogId) || 0;
  if (version < seen) return false;
  state.versions.set(dialogId, version);
  return true;
}

function setConnection(text, status) {
  $("connection").textContent = text;
  $("connection").className = "badge " + status;
}

// --- presence and the team -------------------------------------------------------------------

function scheduleHeartbeat() {
  clearTimeout(state.heartbeatTimer);
  state.heartbeatTimer = setTimeout(async () => { await heartbeat(); if (state.ops) scheduleHeartbeat(); },
                                    heartbeatMs);
}

async function heartbeat() {
  if (!state.ops || !state.ops.connected) return;
  try {
    const mine = await call(state.ops, "presence:heartbeat");
    if (mine.heartbeat_interval) heartbeatMs = Math.max(1000, mine.heartbeat_interval * 1000);
    showPresence(mine);
  } catch (err) { setConnection(err.message, "disconnected"); }
}

async function refreshPresence() {
  try { showPresence(await call(state.ops, "presence:status")); } catch (_) { /* the next heartbeat shows it */ }
}

function showPresence(mine) {
  $("presence").value = mine.status;
  setConnection(`${mine.status} · ${mine.active_chats}/${mine.max_active_chats} chats`, mine.status);
}

$("presence").addEventListener("change", async () => {
  try {
    showPresence(await call(state.ops, "presence:update", { status: $("presence").value }));
  } catch (err) { $("chat-error").textContent = err.message; }
});

async function loadOperators() {
  if (!state.ops) return;
  try { state.operators = await call(state.ops, "operators:list"); } catch (_) { return; }
  $("operators").replaceChildren(...state.operators.map((o) => el("li", { "data-operator-id": o.operator_id },
    el("span", {}, o.operator_id === me() ? `${o.name} (you)` : o.name,
      el("span", { class: "meta" }, ` ${o.active_chats}/${o.max_active_chats}`)),
    el("span", { class: "badge " + o.status }, o.status))));
  renderTransferTargets();
}

const operatorName = (id) => (state.operators.find((o) => o.operator_id === id) || { name: `#${id}` }).name;

// --- the queue, offers and my chats ---------------------------------------------------------

async function loadQueue() {
  if (!state.ops) return;
  state.queue = await call(state.ops, "handoff:queue");
  $("queue-size").textContent = state.queue.length;
  $("queue").replaceChildren(...state.queue.map((q) => el("li", { "data-dialog-id": q.dialog_id },
    el("div", { class: "card-head" },
      el("strong", {}, q.visitor_label || `Dialog ${q.dialog_id}`),
      el("span", { class: "meta" }, "waiting ", el("span", { "data-since": q.requested_at }, since(q.requested_at)))),
    el("p", { class: "meta" }, [q.page_url || q.origin, q.reason && (REASONS[q.reason] || q.reason)]
      .filter(Boolean).join(" · ")),
    q.preview ? el("p", { class: "preview" }, `“${q.preview}”`) : null,
    el("div", { class: "row" }, el("span", { class: "meta" }, `#${q.position} in line`),
      el("button", { class: "accept", type: "button", onclick: () => accept(q.dialog_id),
                     "aria-label": `Accept ${q.visitor_label || "dialog " + q.dialog_id}` }, "Accept")))));
}

function tick() {
  for (const node of document.querySelectorAll("[data-since]")) node.textContent = since(node.dataset.since);
}

async function loadChats() {
  if (!state.ops) return;
  state.chats = await call(state.ops, "chats:active");
  for (const id of [...state.unread.keys()]) {
    if (!state.chats.some((d) => d.dialog_id === id)) state.unread.delete(id);
  }
  renderChats();
  refreshPresence();
  if (state.current && !state.chats.some((d) => d.dialog_id === state.current)) {
    if (!$("chat-open").hidden && $("chat-status").textContent !== "closed") showStatus("no longer yours", null);
  }
}

const label = (d) => d.visitor_name || (d.visitor_id ? `Visitor ${d.visitor_id.slice(1, 7)}` : `Dialog ${d.dialog_id}`);

function renderChats() {
  $("chats").replaceChildren(...state.chats.map((d) => {
    const unread = state.unread.get(d.dialog_id) || 0;
    return el("li", { "data-dialog-id": d.dialog_id, class: d.dialog_id === state.current ? "selected" : "" },
      el("button", { type: "button", class: "open", onclick: () => openDialog(d.dialog_id),
                     "aria-current": d.dialog_id === state.current ? "true" : null },
        label(d), el("span", { class: "meta" }, " " + (d.page_url || d.origin || ""))),
      unread ? el("span", { class: "badge unread", "aria-label": `${unread} unread` }, unread) : null);
  }));
}

function renderOffers() {
  $("offers-title").hidden = state.offers.size === 0;
  $("offers").replaceChildren(...[...state.offers.values()].map((o) => el("li", { "data-dialog-id": o.dialog_id },
    el("span", {}, `Dialog ${o.dialog_id} from ${operatorName(o.from_operator_id)}`),
    el("div", { class: "row" },
      el("button", { type: "button", class: "take", onclick: () => answerOffer(o.dialog_id, true) }, "Accept"),
      el("button", { type: "button", class: "secondary", onclick: () => answerOffer(o.dialog_id, false) },
         "Decline")))));
}

async function answerOffer(dialogId, take) {
  state.offers.delete(dialogId);
  renderOffers();
  try {
    await call(state.ops, take ? "transfer:accept" : "transfer:decline", { dialog_id: dialogId });
    if (take) { await loadChats(); await openDialog(dialogId); }
  } catch (err) { $("chat-error").textContent = err.message; }
}

async function accept(dialogId) {
  $("chat-error").textContent = "";
  try {
    await call(state.ops, "handoff:accept", { dialog_id: dialogId });
    await loadChats();
    await openDialog(dialogId);
  } catch (err) {
    $("chat-error").textContent = err.code === "conflict" ? "Someone else took it first." : err.message;
    await loadQueue();
  }
}

// --- alerts: a sound and a desktop notification for a new queue item -------------------------

$("alerts").addEventListener("change", async () => {
  state.alerts = $("alerts").checked;
  localStorage.setItem(KEY + "alerts", state.alerts ? "on" : "off");
  if (state.alerts && window.Notification && Notification.permission === "default") {
    await Notification.requestPermission();
  }
});

function beep() {
  try {
    const audio = new AudioContext();
    const tone = audio.createOscillator();
    tone.frequency.value = 880;
    tone.connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.15);
  } catch (_) { /* no audio here */ }
}

function notify(title, body) {
  if (!state.alerts) return;
  beep();
  if (window.Notification && Notification.permission === "granted") new Notification(title, { body });
}

function alertNew(dialogId) {
  const q = state.queue.find((item) => item.dialog_id === dialogId);
  if (!q) return;
  notify(q.reason === "offline_message" ? "A visitor left a message" : "A visitor is waiting",
         `${q.visitor_label || "Dialog " + dialogId}: ${q.preview || q.reason || ""}`);
}

function alertOffer(offer) {
  notify("A dialog is offered to you", `from ${operatorName(offer.from_operator_id)}`);
}

// --- the open dialog ----------------------------------------------------------------------------

// Deltas that come while a dialog opens wait until its streams' text so far is shown:
// shown first, one would start a reply's line in the middle.
async function openDialog(dialogId, rejoin = false) {
  state.heldDeltas = [];
  try {
    await loadDialog(dialogId, rejoin);
  } finally {
    const held = state.heldDeltas;
    state.heldDeltas = null;
    for (const ev of held) if (ev.dialog_id === state.current) growStream(ev);
  }
}

async function loadDialog(dialogId, rejoin) {
  if (state.current && state.current !== dialogId) {
    try { await call(state.dlg, "dialog:leave", { dialog_id: state.current }); } catch (_) { /* gone */ }
  }
  let dialog;
  try {
    dialog = await call(state.dlg, "dialog:join", { dialog_id: dialogId });
  } catch (err) {
    closeDialog();
    $("chat-error").textContent = err.message;
    return;
  }
  fresh(dialog.dialog_id, dialog.version);
  if (!rejoin || state.current !== dialogId) {
    state.seen = new Set();
    state.streams = new Map();
    $("messages").replaceChildren();
  }
  state.current = dialogId;
  store("current", dialogId);
  state.unread.delete(dialogId);
  store("unread", [...state.unread]);
  $("chat-empty").hidden = true; $("chat-open").hidden = false;
  $("console-view").classList.add("chatting");
  $("chat-title").textContent = label(dialog);
  $("chat-info").textContent = [dialog.page_url || dialog.origin, dialog.visitor_contact && `contact: ${dialog.visitor_contact}`,
                                `dialog ${dialog.dialog_id}`].filter(Boolean).join(" · ");
  showStatus(dialog.handoff_status, dialog.operator_id);
  if (dialog.status === "closed") showClosed();
  const [messages, notes] = await Promise.all([
    call(state.dlg, "dialog:messages", { dialog_id: dialogId, limit: 200 }),
    call(state.ops, "notes:list", { dialog_id: dialogId }).catch(() => []),
  ]);
  const items = [...messages.map((m) => ["m", m]), ...notes.map((n) => ["n", n])]
    .sort((a, b) => new Date(a[1].created_at) - new Date(b[1].created_at));
  for (const [kind, item] of items) (kind === "m" ? addMessage : addNote)(item);
  for (const open of await call(state.dlg, "dialog:streams", { dialog_id: dialogId })) {
    const s = state.streams.get(open.stream_id);
    if (s) { s.text.data = ""; s.seq = 0; } // a rejoin: the text so far replaces what was shown
    growStream(open);
  }
  renderChats();
  if (!rejoin) $("text").focus();
}

function closeDialog() {
  state.current = null;
  sessionStorage.removeItem(KEY + "current");
  $("chat-open").hidden = true; $("chat-empty").hidden = false;
  $("console-view").classList.remove("chatting");
  renderChats();
}

$("back").addEventListener("click", () => $("console-view").classList.remove("chatting"));

function showStatus(status, operatorId) {
  state.holding = status === "active" && operatorId === me();
  $("chat-status").textContent = state.holding ? "you hold this dialog" : status;
  enableActions();
}

function showClosed() {
  state.holding = false;
  $("chat-status").textContent = "closed";
  enableActions();
}

function enableActions() {
  for (const id of ["release", "transfer", "transfer-to", "close"]) $(id).disabled = !state.holding;
  // Notes may be written on any dialog one can open; replies only in one's own.
  const write = state.holding || state.mode === "note";
  $("text").disabled = $("send-button").disabled = !write;
}

const LABELS = { visitor: "Visitor", assistant: "Bot", operator: "Operator", user: "Owner" };

function scrollDown() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight; // only the list scrolls, never the page (the header stays)
}

function addMessage(m) {
  if (state.seen.has("m" + m.id)) return;
  state.seen.add("m" + m.id);
  const who = m.sender === "operator" && m.sender_id === me() ? "You"
    : m.sender === "operator" ? operatorName(m.sender_id) : LABELS[m.sender];
  const li = el("li", { class: m.sender + (m.interrupted ? " interrupted" : ""), "data-message-id": m.id },
    el("span", { class: "who" }, who, el("time", { datetime: m.created_at }, clock(m.created_at))), m.text);
  // A streamed reply ends as this message (its client_msg_id is the stream's id).
  const s = m.client_msg_id && state.streams.get(m.client_msg_id);
  if (m.client_msg_id) state.seen.add("s" + m.client_msg_id);
  if (s) { s.li.replaceWith(li); state.streams.delete(m.client_msg_id); } else $("messages").append(li);
  scrollDown();
}

// A bot's reply as it streams: grows by each delta past its seq (docs/live-state.md).
function growStream(ev) {
  if (state.seen.has("s" + ev.stream_id)) return; // already ended
  let s = state.streams.get(ev.stream_id);
  if (!s) {
    const text = document.createTextNode("");
    const li = el("li", { class: "assistant streaming", "data-stream-id": ev.stream_id },
      el("span", { class: "who" }, LABELS.assistant), text);
    $("messages").append(li);
    s = { seq: 0, li, text };
    state.streams.set(ev.stream_id, s);
  }
  if (ev.seq <= s.seq) return;
  s.seq = ev.seq;
  s.text.appendData(ev.text);
  scrollDown();
}

function addNote(n) {
  if (state.seen.has("n" + n.id)) return;
  state.seen.add("n" + n.id);
  $("messages").append(el("li", { class: "note", "data-note-id": n.id },
    el("span", { class: "who" }, `Note by ${n.author_id === me() ? "you" : operatorName(n.author_id)}`,
      el("time", { datetime: n.created_at }, clock(n.created_at))), n.text));
  scrollDown();
}

function addSystem(text) {
  $("messages").append(el("li", { class: "system" }, text));
  scrollDown();
}

// --- writing: replies, notes, canned replies, typing -----------------------------------------

function setMode(mode) {
  state.mode = mode;
  $("mode-reply").setAttribute("aria-selected", String(mode === "reply"));
  $("mode-note").setAttribute("aria-selected", String(mode === "note"));
  document.querySelector(".composer").classList.toggle("note", mode === "note");
  $("text").placeholder = mode === "note" ? "An internal note: only operators see it"
    : "Write to the visitor… (type / for canned replies, Enter to send)";
  $("send-button").textContent = mode === "note" ? "Add note" : "Send";
  enableActions();
  $("text").focus();
}
$("mode-reply").addEventListener("click", () => setMode("reply"));
$("mode-note").addEventListener("click", () => setMode("note"));

async function submit() {
  const text = $("text").value.trim();
  if (!text || !state.current) return;
  $("chat-error").textContent = "";
  try {
    if (state.mode === "note") addNote(await call(state.ops, "note:add", { dialog_id: state.current, text }));
    else addMessage(await call(state.dlg, "dialog:send", { dialog_id: state.current, text, client_msg_id: uid() }));
    $("text").value = "";
    hideSuggestions();
  } catch (err) { $("chat-error").textContent = err.message; }
}

$("send").addEventListener("submit", (ev) => { ev.preventDefault(); submit(); });

async function loadCanned() {
  if (!state.ops) return;
  try { state.canned = await call(state.ops, "canned:list"); } catch (_) { return; }
  $("canned-list").replaceChildren(...state.canned.map((r) => el("li", {},
    el("span", {}, el("strong", {}, "/" + r.shortcut), " " + r.text),
    el("button", { type: "button", class: "secondary", "aria-label": `Delete /${r.shortcut}`,
                   onclick: () => call(state.ops, "canned:delete", { reply_id: r.id }).catch((e) => {
                     $("canned-error").textContent = e.message;
                   }) }, "Delete"))));
}

let suggestion = -1;

function suggestions() {
  const text = $("text").value;
  if (state.mode !== "reply" || !text.startsWith("/") || /\s/.test(text)) return [];
  return state.canned.filter((r) => r.shortcut.startsWith(text.slice(1).toLowerCase()));
}

function renderSuggestions() {
  const found = suggestions();
  $("canned-suggest").hidden = found.length === 0;
  suggestion = found.length ? Math.min(Math.max(suggestion, 0), found.length - 1) : -1;
  $("canned-suggest").replaceChildren(...found.map((r, i) => el("li", {
    role: "option", id: `canned-${r.id}`, "aria-selected": String(i === suggestion),
    onmousedown: (ev) => { ev.preventDefault(); useCanned(r); },
  }, el("strong", {}, "/" + r.shortcut), " " + r.text)));
  if (found[suggestion]) $("text").setAttribute("aria-activedescendant", `canned-${found[suggestion].id}`);
  else $("text").removeAttribute("aria-activedescendant");
}

function hideSuggestions() { suggestion = -1; $("canned-suggest").hidden = true; }

function useCanned(reply) {
  $("text").value = reply.text;
  hideSuggestions();
  $("text").focus();
}

$("text").addEventListener("keydown", (ev) => {
  const found = $("canned-suggest").hidden ? [] : suggestions();
  if (found.length && (ev.key === "ArrowDown" || ev.key === "ArrowUp")) {
    ev.preventDefault();
    suggestion = (suggestion + (ev.key === "ArrowDown" ? 1 : found.length - 1)) % found.length;
    renderSuggestions();
  } else if (found.length && (ev.key === "Enter" || ev.key === "Tab")) {
    ev.preventDefault();
    useCanned(found[Math.max(0, suggestion)]);
  } else if (ev.key === "Escape") {
    hideSuggestions();
  } else if (ev.key === "Enter" && !ev.shiftKey) {
    ev.preventDefault();
    submit();
  }
});

// "typing" is repeated at most every 1.5 s while typing, withdrawn 2 s after the last keystroke.
let typingStop = null, typingSent = 0;
$("text").addEventListener("input", () => {
  renderSuggestions();
  if (!state.current || !state.dlg || state.mode !== "reply") return;
  const dialogId = state.current;
  if (Date.now() - typingSent > 1500) {
    typingSent = Date.now();
    state.dlg.emit("typing:set", { dialog_id: dialogId, is_typing: true }, () => {});
  }
  clearTimeout(typingStop);
  typingStop = setTimeout(() => {
    typingSent = 0;
    if (state.dlg) state.dlg.emit("typing:set", { dialog_id: dialogId, is_typing: false }, () => {});
  }, 2000);
});

$("canned-manage").addEventListener("click", () => { $("canned-error").textContent = ""; $("canned-dialog").showModal(); });
$("canned-done").addEventListener("click", () => $("canned-dialog").close());
$("canned-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await call(state.ops, "canned:create", { shortcut: $("canned-shortcut").value, text: $("canned-text").value });
    $("canned-shortcut").value = $("canned-text").value = "";
    $("canned-error").textContent = "";
    await loadCanned();
  } catch (err) { $("canned-error").textContent = err.message; }
});

// --- transfer, release, close, transcript ---------------------------------------------------------

function renderTransferTargets() {
  const others = state.operators.filter((o) => o.operator_id !== me() && o.status === "online");
  $("transfer-to").replaceChildren(el("option", { value: "" }, "Back to the queue"),
    ...others.map((o) => el("option", { value: o.operator_id }, `${o.name} (${o.active_chats}/${o.max_active_chats})`)));
}

async function act(work) {
  $("chat-error").textContent = "";
  try { await work(); } catch (err) { $("chat-error").textContent = err.message; }
}

$("transfer").addEventListener("click", () => act(async () => {
  const target = $("transfer-to").value;
  const body = { dialog_id: state.current };
  if (target) body.operator_id = Number(target);
  await call(state.dlg, "dialog:transfer", body);
  if (!target) { closeDialog(); await loadChats(); }
}));

$("release").addEventListener("click", () => act(async () => {
  await call(state.ops, "handoff:release", { dialog_id: state.current });
  closeDialog();
  await loadChats();
}));

$("close").addEventListener("click", () => act(async () => {
  await call(state.dlg, "dialog:close", { dialog_id: state.current });
  addSystem("You closed the dialog.");
  showClosed();
  await loadChats();
}));

$("transcript").addEventListener("click", () => act(async () => {
  const t = await call(state.dlg, "dialog:transcript", { dialog_id: state.current });
  const notes = (t.notes || []).map((n) => `[note ${n.created_at.slice(0, 19).replace("T", " ")}] ${n.text}`);
  const text = [t.text, ...notes].filter(Boolean).join("\n");
  $("transcript-text").textContent = text;
  const link = $("transcript-download");
  URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  link.download = `dialog-${t.dialog.dialog_id}.txt`;
  $("transcript-dialog").showModal();
}));
$("transcript-done").addEventListener("click", () => $("transcript-dialog").close());

if (state.token) start();
else showView(false);
