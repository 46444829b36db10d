// The hub's website widget. Embed it with one script tag:
//   <script src="https://HUB/widget.js" data-assistant-id="ID" async></script>
// Optional: data-title="Chat with us". The page's origin must be in the assistant's
// allowed_origins, and (for the live connection) in the hub's HUB_CORS_ORIGINS.
// Everything renders inside a shadow root, so the site's styles and ours never mix.
(() => {
  "use strict";
  const script = document.currentScript ||
    [...document.querySelectorAll("script[src]")].find((s) => /\/widget\.js(\?|$)/.test(s.src));
  if (!script || window.__hubWidgetLoaded) return;
  window.__hubWidgetLoaded = true;
  const HUB = new URL(script.src, location.href).origin;
  const ASSISTANT = Number(script.dataset.assistantId || new URLSearchParams(location.search).get("assistant_id"));
  const TITLE = script.dataset.title || "Chat with us";
  const KEY = `hub-widget:${HUB}:${ASSISTANT}`;
  const state = { session: null, socket: null, version: 0, seen: new Set(), started: false, position: null };

  const uid = () => (window.crypto && crypto.randomUUID) ? crypto.randomUUID()
    : Date.now().toString(36) + Math.random().toString(36).slice(2);

  // --- the UI ---------------------------------------------------------------------------
  const host = document.createElement("div");
  host.id = "hub-widget";
  const root = host.attachShadow({ mode: "open" });
  root.innerHTML = `
    <style>
      :host { all: initial; }
      * { box-sizing: border-box; font: 14px/1.4 system-ui, sans-serif; }
      .toggle { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; border: 0; border-radius: 24px;
                padding: 12px 18px; background: #3a64d8; color: #fff; cursor: pointer;
                box-shadow: 0 4px 12px rgba(0,0,0,.2); }
      .panel { position: fixed; right: 20px; bottom: 76px; z-index: 2147483000; width: 340px; height: 460px;
               display: flex; flex-direction: column; background: #fff; border-radius: 10px; overflow: hidden;
               box-shadow: 0 6px 24px rgba(0,0,0,.25); }
      .panel[hidden] { display: none; }
      header { background: #3a64d8; color: #fff; padding: 10px 12px; font-weight: 600; }
      .status { padding: 6px 12px; background: #f4f6fa; color: #4a5368; font-size: 12px; min-height: 28px; }
      ol { list-style: none; margin: 0; padding: 8px; flex: 1; overflow-y: auto; }
      li { margin: 4px 0; max-width: 80%; padding: 6px 10px; border-radius: 10px; background: #eef1f6;
           white-space: pre-wrap; word-wrap: break-word; }
      li.visitor { margin-left: auto; background: #3a64d8; color: #fff; }
      li .who { display: block; font-size: 11px; opacity: .7; }
      .typing { padding: 0 12px; font-size: 12px; color: #69738a; min-height: 16px; }
      form { display: flex; gap: 6px; padding: 8px; border-top: 1px solid #eef1f6; }
      input { flex: 1; padding: 8px; border: 1px solid #ccd3e0; border-radius: 6px; }
      button.send, button.human { border: 0; border-radius: 6px; padding: 8px 10px; cursor: pointer;
                                  background: #3a64d8; color: #fff; }
      button.human { background: #fff; color: #3a64d8; border: 1px solid #3a64d8; margin: 0 8px 8px; }
      .error { color: #c0392b; padding: 0 12px; font-size: 12px; }
    </style>
    <button class="toggle" id="toggle" type="button"></button>
    <div class="panel" id="panel" role="dialog" hidden>
      <header id="title"></header>
      <div class="status" id="status">Connecting…</div>
      <ol id="messages" aria-live="polite"></ol>
      <div class="typing" id="typing"></div>
      <div class="error" id="error" role="alert"></div>
      <form id="form">
        <input id="input" autocomplete="off" maxlength="4000" placeholder="Type a message…">
        <button class="send" id="send" type="submit">Send</button>
      </form>
      <button class="human" id="human" type="button">Talk to a human</button>
    </div>`;
  const $ = (id) => root.getElementById(id);
  $("toggle").textContent = TITLE;
  $("title").textContent = TITLE;

  function mount() { document.body.appendChild(host); }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);

  $("toggle").addEventListener("click", () => {
    $("panel").hidden = !$("panel").hidden;
    if (!$("panel").hidden) {
      if (!state.started) start();
      $("input").focus();
    }
  });

  const LABELS = { visitor: "You", assistant: "Assistant", operator: "Operator", user: "Support" };

  function addMessage(m) {
    if (state.seen.has(m.id)) return;
    state.seen.add(m.id);
    const li = document.createElement("li");
    li.className = m.sender;
    li.dataset.messageId = m.id;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = LABELS[m.sender] || m.sender;
    li.append(who, document.createTextNode(m.text));
    $("messages").append(li);
    li.scrollIntoView({ block: "end" });
  }

  function showHandoff(status, reason) {
    const texts = {
      none: "You are talking to our assistant.",
      requested: "Waiting for an operator…",
      active: "An operator has joined the conversation.",
      resolved: "You are back with our assistant.",
      cancelled: "You are talking to our assistant.",
    };
    let text = texts[status] || status;
    if (status !== "requested") state.position = null;
    else if (reason === "operator_offline") text = "Your operator left; finding another one…";
    else if (state.position) text = `Waiting for an operator: you are #${state.position} in line.`;
    $("status").textContent = text;
    $("human").hidden = status === "requested" || status === "active";
  }

  // --- talking to the hub -------------------------------------------------------------------
  function loadClient() {
    if (window.io) return Promise.resolve(window.io);
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = HUB + "/vendor/socket.io.min.js";
      s.onload = () => resolve(window.io);
      s.onerror = () => reject(new Error("could not load the chat client"));
      document.head.appendChild(s);
    });
  }

  async function newSession() {
    const saved = localStorage.getItem(KEY);
    const body = { assistant_id: ASSISTANT };
    if (saved) body.visitor_id = saved;
    const res = await fetch(HUB + "/api/widget/sessions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error((data.error && data.error.message) || "chat unavailable");
    localStorage.setItem(KEY, data.visitor_id);
    state.session = data;
    return data;
  }

  async function call(event, data) {
    const reply = await state.socket.timeout(10000).emitWithAck(event, data);
    if (!reply.ok) throw new Error(reply.error.message);
    return reply.data;
  }

  async function start() {
    state.started = true;
    try {
      const [io] = await Promise.all([loadClient(), newSession()]);
      const socket = io(HUB + "/dialogs", { auth: (cb) => cb({ token: state.session.visitor_token }) });
      state.socket = socket;
      socket.on("connect", async () => {
        $("error").textContent = "";
        const dialogId = state.session.dialog_id;
        const status = await call("dialog:status", { dialog_id: dialogId });
        if (status.version >= state.version) { state.version = status.version; showHandoff(status.handoff_status); }
        for (const m of await call("dialog:messages", { dialog_id: dialogId, limit: 100 })) addMessage(m);
      });
      socket.on("connect_error", async (err) => {
        $("status").textContent = "Reconnecting…";
        if (err.data && err.data.code === "unauthorized") { // the visitor token expired: resume the dialog
          try { await newSession(); socket.connect(); } catch (e) { $("error").textContent = e.message; }
        }
      });
      socket.on("message:added", (ev) => addMessage(ev.message));
      socket.on("handoff:status", (ev) => {
        if (ev.version < state.version) return; // a stale event
        state.version = ev.version;
        showHandoff(ev.status, ev.reason);
      });
      socket.on("queue:position", (ev) => {
        state.position = ev.position;
        $("status").textContent = `Waiting for an operator: you are #${ev.position} in line.`;
      });
      socket.on("typing:indicator", (ev) => {
        if (ev.sender !== "visitor") $("typing").textContent = ev.is_typing ? "Typing…" : "";
      });
    } catch (err) {
      state.started = false;
      $("status").textContent = "";
      $("error").textContent = err.message;
    }
  }

  $("form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = $("input").value.trim();
    if (!text || !state.socket) return;
    try {
      addMessage(await call("dialog:send", { dialog_id: state.session.dialog_id, text, client_msg_id: uid() }));
      $("input").value = "";
      $("error").textContent = "";
    } catch (err) { $("error").textContent = err.message; }
  });

  // "typing" is repeated at most every 1.5 s while the visitor types (so someone who
  // joins meanwhile sees it too) and withdrawn 2 s after the last keystroke.
  let typingStop = null, typingSent = 0;
  $("input").addEventListener("input", () => {
    if (!state.socket || !state.socket.connected) return;
    const dialogId = state.session.dialog_id;
    if (Date.now() - typingSent > 1500) {
      typingSent = Date.now();
      state.socket.emit("typing:set", { dialog_id: dialogId, is_typing: true }, () => {});
    }
    clearTimeout(typingStop);
    typingStop = setTimeout(() => {
      typingSent = 0;
      state.socket.emit("typing:set", { dialog_id: dialogId, is_typing: false }, () => {});
    }, 2000);
  });

  $("human").addEventListener("click", async () => {
    if (!state.socket) return;
    try {
      const r = await call("dialog:handoff", { dialog_id: state.session.dialog_id, request_id: uid() });
      if (r.handoff_status === "requested" && r.queue_position) {
        state.position = r.queue_position;
        $("status").textContent = `Waiting for an operator: you are #${r.queue_position} in line.`;
      }
      $("human").hidden = true;
    } catch (err) { $("error").textContent = err.message; }
  });

  window.HubWidget = {
    open() { if ($("panel").hidden) $("toggle").click(); },
    close() { $("panel").hidden = true; },
  };
})();
