// The operator console: log in, presence, the handoff queue, accept, converse, release.
// Talks to the hub with the official socket.io-client (served at /vendor/socket.io.min.js):
// /operators for presence and the queue, /dialogs to converse in the dialogs one holds.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  let heartbeatMs = 15000; // until the hub says (presence.heartbeat_interval: HUB_PRESENCE_TIMEOUT / 3)
  const REFRESH_MS = 10 * 60 * 1000; // access tokens live 15 minutes by default

  const state = {
    token: sessionStorage.getItem("hub.console.token"),
    refresh: sessionStorage.getItem("hub.console.refresh"),
    user: JSON.parse(sessionStorage.getItem("hub.console.user") || "null"),
    ops: null, dlg: null, current: null, timers: [],
    versions: new Map(), // dialog_id -> highest handoff version seen (stale events are dropped)
    seen: new Set(), // message ids rendered in the open dialog
    presence: new Map(), // operator_id -> status
  };

  function uid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  async function http(path, body) {
    const res = await fetch(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error((data.error && data.error.message) || res.statusText);
    return data;
  }

  async function call(socket, event, data = {}) {
    const reply = await socket.timeout(10000).emitWithAck(event, data);
    if (!reply.ok) {
      const err = new Error(reply.error.message);
      err.code = reply.error.code;
      throw err;
    }
    return reply.data;
  }

  function keep(login) {
    state.token = login.access_token;
    state.refresh = login.refresh_token;
    if (login.user) state.user = login.user;
    sessionStorage.setItem("hub.console.token", state.token);
    sessionStorage.setItem("hub.console.refresh", state.refresh);
    sessionStorage.setItem("hub.console.user", JSON.stringify(state.user));
  }

  function forget() {
    for (const key of ["token", "refresh", "user"]) sessionStorage.removeItem("hub.console." + key);
    state.token = state.refresh = state.user = null;
  }

  // --- log in / out -----------------------------------------------------------------------
  $("login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      const login = await http("/auth/login", { email: $("email").value, password: $("password").value });
      if (!["operator", "admin"].includes(login.user.role)) throw new Error("this account is not an operator");
      keep(login);
      start();
    } catch (err) {
      $("login-error").textContent = err.message;
    }
  });

  $("logout").addEventListener("click", async () => {
    try { await call(state.ops, "presence:update", { status: "offline" }); } catch (_) { /* leaving anyway */ }
    try {
      await fetch("/auth/logout", {
        method: "POST",
        headers: { Authorization: "Bearer " + state.token, "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: state.refresh }),
      });
    } catch (_) { /* leaving anyway */ }
    stop();
    forget();
    $("console-view").hidden = true; $("me").hidden = true; $("login-view").hidden = false;
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
    $("login-view").hidden = true; $("console-view").hidden = false; $("me").hidden = false;
    $("who").textContent = state.user ? state.user.email : "";
    const opts = { auth: (cb) => cb({ token: state.token }) };
    state.ops = io("/operators", opts);
    state.dlg = io("/dialogs", opts);
    const ops = state.ops, dlg = state.dlg;

    ops.on("connect", async () => {
      setConnection("connected");
      await Promise.all([heartbeat(), loadQueue(), loadChats()]);
    });
    ops.on("disconnect", () => setConnection("disconnected"));
    // A refused connection is not retried by the client: refresh the token once, then retry.
    for (const socket of [ops, dlg]) {
      socket.on("connect_error", async (err) => {
        setConnection("error: " + err.message);
        if (err.data && err.data.code === "unauthorized" && state.refresh && await refreshToken()) socket.connect();
      });
    }
    dlg.on("connect", async () => { if (state.current) await openDialog(state.current, true); });

    for (const event of ["handoff:requested", "handoff:accepted", "handoff:released", "queue:updated"]) {
      ops.on(event, (ev) => {
        if (ev.dialog_id && !fresh(ev.dialog_id, ev.version)) return;
        loadQueue();
        if (event !== "queue:updated" && event !== "handoff:requested") loadChats();
      });
    }
    ops.on("queue:updated", (ev) => { $("queue-size").textContent = ev.size; });
    ops.on("presence:changed", (ev) => { state.presence.set(ev.operator_id, ev.status); renderOperators(); });
    ops.on("message:added", (ev) => {
      if (ev.dialog_id !== state.current) {
        const item = document.querySelector(`#chats li[data-dialog-id="${ev.dialog_id}"] .meta`);
        if (item) item.textContent = "new message";
      }
    });

    dlg.on("message:added", (ev) => { if (ev.dialog_id === state.current) addMessage(ev.message); });
    dlg.on("handoff:status", (ev) => {
      if (!fresh(ev.dialog_id, ev.version)) return;
      if (ev.dialog_id === state.current) showStatus(ev.status, ev.operator_id);
    });
    dlg.on("typing:indicator", (ev) => {
      if (ev.dialog_id === state.current && ev.sender === "visitor") {
        $("typing").textContent = ev.is_typing ? "The visitor is typing…" : "";
      }
    });

    state.timers.push(setInterval(refreshToken, REFRESH_MS));
    scheduleHeartbeat();
  }

  function stop() {
    state.timers.forEach(clearInterval);
    state.timers = [];
    clearTimeout(state.heartbeatTimer);
    if (state.ops) state.ops.close();
    if (state.dlg) state.dlg.close();
    state.ops = state.dlg = null;
    state.current = null;
  }

  function fresh(dialogId, version) {
    if (version === undefined || version === null) return true;
    const seen = state.versions.get(dialogId) || 0;
    if (version < seen) return false;
    state.versions.set(dialogId, version);
    return true;
  }

  function setConnection(text) {
    $("connection").textContent = text;
  }

  // --- presence -----------------------------------------------------------------------------
  function scheduleHeartbeat() {
    clearTimeout(state.heartbeatTimer);
    state.heartbeatTimer = setTimeout(async () => { await heartbeat(); if (state.ops) scheduleHeartbeat(); },
                                      heartbeatMs);
  }

  async function heartbeat() {
    if (!state.ops || !state.ops.connected) return;
    try {
      const me = await call(state.ops, "presence:heartbeat");
      if (me.heartbeat_interval) heartbeatMs = Math.max(1000, me.heartbeat_interval * 1000);
      showPresence(me);
    } catch (err) { setConnection(err.message); }
  }

  function showPresence(me) {
    $("presence").value = me.status;
    $("connection").textContent = `${me.status} · ${me.active_chats}/${me.max_active_chats} chats`;
    $("connection").className = "badge " + me.status;
    state.presence.set(me.operator_id, me.status);
    renderOperators();
  }

  $("presence").addEventListener("change", async () => {
    try { showPresence(await call(state.ops, "presence:update", { status: $("presence").value })); } catch (err) {
      $("chat-error").textContent = err.message;
    }
  });

  function renderOperators() {
    const list = $("operators");
    list.replaceChildren(...[...state.presence.entries()].map(([id, status]) =>
      el("li", {}, el("span", {}, state.user && id === state.user.id ? `#${id} (you)` : `#${id}`),
        el("span", { class: "badge " + status }, status))));
  }

  // --- queue and chats ------------------------------------------------------------------------
  async function loadQueue() {
    if (!state.ops) return;
    const items = await call(state.ops, "handoff:queue");
    $("queue-size").textContent = items.length;
    $("queue").replaceChildren(...items.map((q) => el("li", { "data-dialog-id": q.dialog_id },
      el("span", {}, `#${q.position} · dialog ${q.dialog_id}`,
        el("span", { class: "meta" }, " " + (q.reason || ""))),
      el("button", { class: "accept", type: "button", onclick: () => accept(q.dialog_id) }, "Accept"))));
  }

  async function loadChats() {
    if (!state.ops) return;
    const chats = await call(state.ops, "chats:active");
    $("chats").replaceChildren(...chats.map((d) => el("li", {
      "data-dialog-id": d.dialog_id, class: d.dialog_id === state.current ? "selected" : "",
      onclick: () => openDialog(d.dialog_id),
    }, el("span", {}, `dialog ${d.dialog_id}`), el("span", { class: "meta" }, ""))));
    if (state.current && !chats.some((d) => d.dialog_id === state.current)) closeDialog();
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

  // --- the open dialog --------------------------------------------------------------------------
  async function openDialog(dialogId, rejoin = false) {
    if (state.current && state.current !== dialogId) {
      try { await call(state.dlg, "dialog:leave", { dialog_id: state.current }); } catch (_) { /* gone */ }
    }
    const dialog = await call(state.dlg, "dialog:join", { dialog_id: dialogId });
    fresh(dialog.dialog_id, dialog.version);
    if (!rejoin || state.current !== dialogId) {
      state.seen = new Set();
      $("messages").replaceChildren();
    }
    state.current = dialogId;
    $("chat-empty").hidden = true; $("chat-open").hidden = false;
    $("chat-title").textContent = `Dialog ${dialogId}`;
    showStatus(dialog.handoff_status, dialog.operator_id);
    for (const m of await call(state.dlg, "dialog:messages", { dialog_id: dialogId, limit: 100 })) addMessage(m);
    document.querySelectorAll("#chats li").forEach((li) =>
      li.classList.toggle("selected", Number(li.dataset.dialogId) === dialogId));
    $("text").focus();
  }

  function closeDialog() {
    state.current = null;
    $("chat-open").hidden = true; $("chat-empty").hidden = false;
  }

  function showStatus(status, operatorId) {
    const mine = status === "active" && state.user && operatorId === state.user.id;
    $("chat-status").textContent = mine ? "you hold this dialog" : status;
    $("text").disabled = !mine;
    $("release").disabled = !mine;
  }

  const LABELS = { visitor: "Visitor", assistant: "Bot", operator: "Operator", user: "Owner" };

  function addMessage(m) {
    if (state.seen.has(m.id)) return;
    state.seen.add(m.id);
    const who = m.sender === "operator" && state.user && m.sender_id === state.user.id ? "You" : LABELS[m.sender];
    const item = el("li", { class: m.sender, "data-message-id": m.id }, el("span", { class: "who" }, who), m.text);
    $("messages").append(item);
    item.scrollIntoView({ block: "end" });
  }

  $("send").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = $("text").value.trim();
    if (!text || !state.current) return;
    $("chat-error").textContent = "";
    try {
      addMessage(await call(state.dlg, "dialog:send", { dialog_id: state.current, text, client_msg_id: uid() }));
      $("text").value = "";
    } catch (err) { $("chat-error").textContent = err.message; }
  });

  // "typing" is repeated at most every 1.5 s while typing, withdrawn 2 s after the last keystroke.
  let typingStop = null, typingSent = 0;
  $("text").addEventListener("input", () => {
    if (!state.current || !state.dlg) return;
    const dialogId = state.current;
    if (Date.now() - typingSent > 1500) {
      typingSent = Date.now();
      state.dlg.emit("typing:set", { dialog_id: dialogId, is_typing: true }, () => {});
    }
    clearTimeout(typingStop);
    typingStop = setTimeout(() => {
      typingSent = 0;
      state.dlg.emit("typing:set", { dialog_id: dialogId, is_typing: false }, () => {});
    }, 2000);
  });

  $("release").addEventListener("click", async () => {
    try {
      await call(state.ops, "handoff:release", { dialog_id: state.current });
      closeDialog();
      await loadChats();
    } catch (err) { $("chat-error").textContent = err.message; }
  });

  if (state.token) start();
})();
