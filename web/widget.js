// The hub's website widget. Embed it with one script tag:
//   <script src="https://HUB/widget.js" data-assistant-id="ID" async></script>
// Optional: data-title="Chat with us" (else the assistant's title). The page's origin
// must be in the assistant's allowed_origins. Title, colour and greeting come from the
// assistant's settings (assistant:settings). Everything renders inside a shadow root,
// so the site's styles and ours never mix. A classic script (not a module): it runs on
// any site with one tag.
(() => {
  "use strict";
  const script = document.currentScript ||
    [...document.querySelectorAll("script[src]")].find((s) => /\/widget\.js(\?|$)/.test(s.src));
  if (!script || window.__hubWidgetLoaded) return;
  window.__hubWidgetLoaded = true;
  const HUB = new URL(script.src, location.href).origin;
  const RAW_ID = script.dataset.assistantId || new URLSearchParams(location.search).get("assistant_id") || "";
  const ASSISTANT = /^[1-9]\d{0,17}$/.test(RAW_ID) ? Number(RAW_ID) : null;
  const KEY = `hub-widget:${HUB}:${ASSISTANT}`;
  const BOT_SILENCE_MS = 8000; // no reply from the bot within this: tell the visitor and offer a human
  const state = {
    session: null, socket: null, version: 0, seen: new Set(), streams: new Map(), started: false, position: null,
    heldDeltas: null, // while (re)connecting: live deltas, shown after the text so far
    handoff: "none", closed: false, unread: 0, botTimer: null, settings: {},
  };

  const uid = () => (window.crypto && crypto.randomUUID) ? crypto.randomUUID()
    : Date.now().toString(36) + Math.random().toString(36).slice(2);

  // --- the UI ---------------------------------------------------------------------------
  const host = document.createElement("div");
  host.id = "hub-widget";
  const root = host.attachShadow({ mode: "open" });
  root.innerHTML = `
    <style>
      :host { all: initial; --accent: #2f55c0; }
      * { box-sizing: border-box; font: 14px/1.4 system-ui, sans-serif; }
      [hidden] { display: none !important; }
      .sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
      :focus-visible { outline: 3px solid #f0b400; outline-offset: 1px; }
      .toggle { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; border: 0; border-radius: 24px;
                padding: 12px 18px; background: var(--accent); color: #fff; cursor: pointer;
                box-shadow: 0 4px 12px rgba(0,0,0,.2); }
      .count { display: inline-block; min-width: 20px; margin-left: 6px; padding: 0 6px; border-radius: 10px;
               background: #b3261e; color: #fff; font-size: 12px; }
      .panel { position: fixed; right: 20px; bottom: 76px; z-index: 2147483000; width: 360px; height: 520px;
               max-height: calc(100vh - 96px); display: flex; flex-direction: column; background: #fff;
               border-radius: 10px; overflow: hidden; box-shadow: 0 6px 24px rgba(0,0,0,.25); color: #1d2330; }
      header { display: flex; align-items: center; justify-content: space-between; background: var(--accent);
               color: #fff; padding: 10px 12px; }
      header h2 { margin: 0; font-weight: 600; font-size: 15px; }
      header button { background: none; border: 0; color: #fff; font-size: 20px; cursor: pointer; line-height: 1; }
      .status { padding: 6px 12px; background: #f4f6fa; color: #3c4558; font-size: 12px; min-height: 28px; }
      ol { list-style: none; margin: 0; padding: 8px; flex: 1; overflow-y: auto; }
      li { margin: 4px 0; max-width: 80%; padding: 6px 10px; border-radius: 10px; background: #eef1f6;
           white-space: pre-wrap; word-wrap: break-word; }
      li.visitor { margin-left: auto; background: var(--accent); color: #fff; }
      li.streaming::after { content: "▍"; opacity: .6; }
      li.interrupted::after { content: " (interrupted)"; font-style: italic; opacity: .7; }
      li.greeting { background: #e3f4ea; }
      li.system { max-width: 100%; background: none; color: #3c4558; text-align: center; font-size: 12px; }
      li .who { display: block; font-size: 11px; opacity: .85; }
      li time { font-size: 11px; opacity: .85; margin-left: 6px; }
      .typing { padding: 0 12px; font-size: 12px; color: #3c4558; min-height: 16px; }
      form { display: flex; gap: 6px; padding: 8px; border-top: 1px solid #eef1f6; }
      form.offline { flex-direction: column; }
      form.offline label { display: flex; flex-direction: column; gap: 2px; font-size: 12px; color: #3c4558; }
      input, textarea { flex: 1; padding: 8px; border: 1px solid #8a93a6; border-radius: 6px; color: #1d2330; }
      button.primary, button.human { border: 0; border-radius: 6px; padding: 8px 10px; cursor: pointer;
                                     background: var(--accent); color: #fff; }
      button.human { background: #fff; color: var(--accent); border: 1px solid var(--accent); margin: 0 8px 8px; }
      .error { color: #b3261e; padding: 0 12px; font-size: 12px; }
      /* Phones: the open chat takes the whole screen. */
      @media (max-width: 480px) {
        .panel { inset: 0; width: 100%; height: 100%; max-height: none; border-radius: 0; }
        .toggle { right: 12px; bottom: 12px; }
      }
    </style>
    <button class="toggle" id="toggle" type="button" aria-expanded="false" aria-controls="panel">
      <span id="toggle-label"></span><span class="count" id="count" hidden></span></button>
    <div class="panel" id="panel" role="dialog" aria-labelledby="title" hidden>
      <header><h2 id="title"></h2>
        <button id="minimize" type="button" aria-label="Close the chat">×</button></header>
      <div class="status" id="status" role="status">Connecting…</div>
      <ol id="messages" aria-live="polite" aria-label="Conversation" tabindex="0"></ol>
      <div class="typing" id="typing" aria-live="polite"></div>
      <div class="error" id="error" role="alert"></div>
      <form id="form">
        <label class="sr-only" for="input">Your message</label>
        <input id="input" autocomplete="off" maxlength="4000" placeholder="Type a message…">
        <button class="primary" id="send" type="submit">Send</button>
      </form>
      <form id="offline" class="offline" hidden>
        <p id="offline-intro"></p>
        <label>Your name (optional) <input id="offline-name" maxlength="100" autocomplete="name"></label>
        <label>Email or phone <input id="offline-contact" maxlength="200" required autocomplete="email"></label>
        <label>Message <textarea id="offline-text" rows="3" maxlength="4000" required></textarea></label>
        <button class="primary" type="submit">Leave a message</button>
      </form>
      <button class="human" id="human" type="button">Talk to a human</button>
      <button class="human" id="restart" type="button" hidden>Start a new conversation</button>
    </div>`;
  const $ = (id) => root.getElementById(id);

  function setTitle(title) {
    $("toggle-label").textContent = title;
    $("title").textContent = title;
  }
  setTitle(script.dataset.title || "Chat with us");

  function mount() { document.body.appendChild(host); }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);

  function setOpen(open) {
    $("panel").hidden = !open;
    $("toggle").setAttribute("aria-expanded", String(open));
    if (open) {
      state.unread = 0;
      showUnread();
      if (!state.started) start();
      $("input").focus();
    } else {
      $("toggle").focus();
    }
  }
  $("toggle").addEventListener("click", () => setOpen($("panel").hidden));
  $("minimize").addEventListener("click", () => setOpen(false));
  $("panel").addEventListener("keydown", (ev) => { if (ev.key === "Escape") setOpen(false); });

  function showUnread() {
    $("count").hidden = state.unread === 0;
    $("count").textContent = state.unread;
    $("count").setAttribute("aria-label", `${state.unread} unread`);
  }

  const LABELS = { visitor: "You", assistant: "Assistant", operator: "Operator", user: "Support" };
  const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

  function line(className, who, text, at) {
    const li = document.createElement("li");
    li.className = className;
    if (who) {
      const label = document.createElement("span");
      label.className = "who";
      label.textContent = who;
      if (at) {
        const time = document.createElement("time");
        time.dateTime = at;
        time.textContent = clock(at);
        label.append(time);
      }
      li.append(label);
    }
    li.append(document.createTextNode(text));
    $("messages").append(li);
    $("messages").scrollTop = $("messages").scrollHeight;
    return li;
  }

  // Streamed bot replies (docs/live-state.md): a line that grows with each delta past
  // its seq, replaced by the stored message (whose client_msg_id is the stream id).
  function growStream(ev) {
    if (state.seen.has("s" + ev.stream_id)) return; // already ended
    let s = state.streams.get(ev.stream_id);
    if (!s) {
      const li = line("assistant streaming", LABELS.assistant, "");
      li.dataset.streamId = ev.stream_id;
      s = { seq: 0, li, text: li.lastChild };
      state.streams.set(ev.stream_id, s);
    }
    if (ev.seq <= s.seq) return;
    s.seq = ev.seq;
    s.text.appendData(ev.text);
    $("messages").scrollTop = $("messages").scrollHeight;
  }

  function addMessage(m) {
    if (state.seen.has(m.id)) return;
    state.seen.add(m.id);
    const s = m.client_msg_id && state.streams.get(m.client_msg_id);
    if (m.client_msg_id) state.seen.add("s" + m.client_msg_id);
    const li = line(m.sender + (m.interrupted ? " interrupted" : ""), LABELS[m.sender] || m.sender, m.text, m.created_at);
    li.dataset.messageId = m.id;
    if (s) { s.li.replaceWith(li); state.streams.delete(m.client_msg_id); }
    if (m.sender !== "visitor") {
      clearTimeout(state.botTimer);
      if ($("panel").hidden) { state.unread += 1; showUnread(); }
    }
  }

  function say(text) { line("system", null, text); }

  function status(text) { $("status").textContent = text; }

  function showHandoff(handoff, reason) {
    state.handoff = handoff;
    const texts = {
      none: "You are talking to our assistant.",
      requested: "Waiting for an operator…",
      active: "An operator has joined the conversation.",
      resolved: "You are back with our assistant.",
      cancelled: "You are talking to our assistant.",
    };
    let text = texts[handoff] || handoff;
    if (handoff !== "requested") state.position = null;
    else if (reason === "operator_offline") text = "Your operator left; finding another one…";
    else if (reason === "offline_message") text = "Thank you: we will get back to you.";
    else if (state.position) text = `Waiting for an operator: you are #${state.position} in line.`;
    if (!state.closed) status(text);
    $("human").hidden = state.closed || handoff === "requested" || handoff === "active";
    if (handoff === "requested" && !state.offlineSent) checkHumans(); // e.g. the bot handed over
  }

  // Waiting with nobody to come ("#N in line" forever): offer the offline form instead.
  async function checkHumans() {
    try {
      const now = await call("dialog:availability", { dialog_id: state.session.dialog_id });
      if (!now.open_now) offerOfflineForm("We are closed right now.");
      else if (now.operators_online === 0) offerOfflineForm("No operator is online right now.");
    } catch (_) { /* the place in line stays shown */ }
  }

  function showClosed() {
    state.closed = true;
    status("This conversation has ended.");
    $("form").hidden = true;
    $("offline").hidden = true;
    $("human").hidden = true;
    $("restart").hidden = false;
  }

  function applySettings(settings) {
    state.settings = settings || {};
    if (!script.dataset.title && settings.title) setTitle(settings.title);
    if (settings.color) host.style.setProperty("--accent", settings.color);
  }

  // --- talking to the hub -------------------------------------------------------------------
  function loadClient() {
    if (window.io) return Promise.resolve(window.io);
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = HUB + "/vendor/socket.io.min.js";
      s.onload = () => resolve(window.io);
      s.onerror = () => reject(new Error("The chat could not load; check your connection and try again."));
      document.head.appendChild(s);
    });
  }

  const REFUSED = {
    403: "This chat is not enabled on this website.",
    404: "This chat is not available: its assistant does not exist.",
    429: "Too many chats were started from here; please try again in a minute.",
  };

  async function newSession() {
    const saved = localStorage.getItem(KEY);
    const body = { assistant_id: ASSISTANT, page_url: location.href.slice(0, 500) };
    if (saved) body.visitor_id = saved;
    let res;
    try {
      res = await fetch(HUB + "/api/widget/sessions", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
    } catch (_) {
      throw new Error("The chat is offline right now; please try again later.");
    }
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(REFUSED[res.status] || (data.error && data.error.message) || "The chat is unavailable.");
    localStorage.setItem(KEY, data.visitor_id);
    state.session = data;
    applySettings(data.settings);
    return data;
  }

  async function call(event, data) {
    const reply = await state.socket.timeout(10000).emitWithAck(event, data);
    if (!reply.ok) throw new Error(reply.error.message);
    return reply.data;
  }

  async function start() {
    state.started = true;
    $("error").textContent = "";
    if (ASSISTANT === null) {
      state.started = false;
      status("");
      $("error").textContent = "This chat is not set up: the page must give its assistant id (data-assistant-id).";
      $("form").hidden = $("human").hidden = true;
      return;
    }
    status("Connecting…");
    $("input").disabled = $("send").disabled = true; // until there is a dialog to write in
    try {
      const [io] = await Promise.all([loadClient(), newSession()]);
      const socket = io(HUB + "/dialogs", { auth: (cb) => cb({ token: state.session.visitor_token }) });
      state.socket = socket;
      $("input").disabled = $("send").disabled = false;
      if (!$("panel").hidden) $("input").focus();
      socket.on("connect", async () => {
        // Deltas that come meanwhile wait until the streams' text so far is shown:
        // shown first, one would start a reply's line in the middle.
        state.heldDeltas = [];
        try {
          await resume();
        } finally {
          const held = state.heldDeltas;
          state.heldDeltas = null;
          held.forEach(growStream);
        }
      });
      async function resume() {
        $("error").textContent = "";
        const dialogId = state.session.dialog_id;
        const current = await call("dialog:status", { dialog_id: dialogId });
        const history = await call("dialog:messages", { dialog_id: dialogId, limit: 100 });
        if (!$("messages").children.length && state.settings.greeting) {
          line("greeting", state.settings.name || LABELS.assistant, state.settings.greeting);
        }
        for (const m of history) addMessage(m);
        for (const open of await call("dialog:streams", { dialog_id: dialogId })) {
          const s = state.streams.get(open.stream_id);
          if (s) { s.text.data = ""; s.seq = 0; } // a reconnect: the text so far replaces what was shown
          growStream(open);
        }
        if (current.version >= state.version) { state.version = current.version; showHandoff(current.handoff_status); }
        if (state.session.bot_online === false && !state.toldNoBot && !["requested", "active"].includes(state.handoff)) {
          state.toldNoBot = true; // no bot is connected for this assistant: say so at once
          say("Our assistant is offline right now. You can talk to a human instead.");
        }
      }
      socket.on("disconnect", () => { if (!state.closed) status("Reconnecting…"); });
      socket.on("connect_error", async (err) => {
        status("Reconnecting…");
        if (err.data && err.data.code === "unauthorized") { // the visitor token expired: resume the dialog
          try { await newSession(); socket.connect(); } catch (e) { $("error").textContent = e.message; }
        }
      });
      socket.on("message:added", (ev) => addMessage(ev.message));
      socket.on("message:delta", (ev) => (state.heldDeltas ? state.heldDeltas.push(ev) : growStream(ev)));
      socket.on("handoff:status", (ev) => {
        if (ev.version < state.version) return; // a stale event
        state.version = ev.version;
        showHandoff(ev.status, ev.reason);
      });
      socket.on("queue:position", (ev) => {
        state.position = ev.position;
        if (state.handoff === "requested" && !state.offlineSent) {
          status(`Waiting for an operator: you are #${ev.position} in line.`);
        }
      });
      socket.on("dialog:closed", () => { say("The conversation was closed."); showClosed(); });
      socket.on("typing:indicator", (ev) => {
        if (ev.sender !== "visitor") $("typing").textContent = ev.is_typing ? "Typing…" : "";
        if (ev.sender === "assistant" && ev.is_typing) clearTimeout(state.botTimer);
      });
    } catch (err) {
      state.started = false;
      status("");
      $("error").textContent = err.message;
    }
  }

  // The bot may be missing (nobody connected for this assistant): say so and offer a human.
  function expectBot() {
    clearTimeout(state.botTimer);
    if (state.handoff === "requested" || state.handoff === "active") return;
    state.botTimer = setTimeout(() => {
      say("Our assistant is not answering right now. You can talk to a human instead.");
      $("human").hidden = false;
      $("human").focus();
    }, BOT_SILENCE_MS);
  }

  $("form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = $("input").value.trim();
    if (!text || !state.socket) return;
    try {
      addMessage(await call("dialog:send", { dialog_id: state.session.dialog_id, text, client_msg_id: uid() }));
      $("input").value = "";
      $("error").textContent = "";
      expectBot();
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

  function offerOfflineForm(why) {
    $("offline-intro").textContent = why + " Leave a message and we will get back to you.";
    $("offline").hidden = false;
    $("form").hidden = true;
    $("human").hidden = true;
    status(why);
    $("offline-contact").focus();
  }

  $("human").addEventListener("click", async () => {
    if (!state.socket) return;
    clearTimeout(state.botTimer);
    try {
      const dialogId = state.session.dialog_id;
      const now = await call("dialog:availability", { dialog_id: dialogId });
      if (!now.open_now) return offerOfflineForm("We are closed right now.");
      if (now.operators_online === 0) return offerOfflineForm("No operator is online right now.");
      const r = await call("dialog:handoff", { dialog_id: dialogId, request_id: uid() });
      if (r.handoff_status === "requested" && r.queue_position) {
        state.position = r.queue_position;
        status(`Waiting for an operator: you are #${r.queue_position} in line.`);
      }
      $("human").hidden = true;
    } catch (err) { $("error").textContent = err.message; }
  });

  $("offline").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { dialog_id: state.session.dialog_id, contact: $("offline-contact").value.trim(),
                   text: $("offline-text").value.trim() };
    if ($("offline-name").value.trim()) body.name = $("offline-name").value.trim();
    try {
      await call("dialog:leave-message", body);
      state.offlineSent = true;
      $("offline").hidden = true;
      $("form").hidden = false;
      line("visitor", LABELS.visitor, body.text, new Date().toISOString());
      say(`Thank you! We will get back to you at ${body.contact}.`);
      status("Thank you: we will get back to you.");
    } catch (err) { $("error").textContent = err.message; }
  });

  $("restart").addEventListener("click", async () => {
    if (state.socket) state.socket.close();
    Object.assign(state, { session: null, socket: null, version: 0, seen: new Set(), streams: new Map(), closed: false,
                           handoff: "none", offlineSent: false, toldNoBot: false });
    $("messages").replaceChildren();
    $("typing").textContent = "";
    $("restart").hidden = true;
    $("form").hidden = false;
    await start();
    $("input").focus();
  });

  window.HubWidget = {
    open() { setOpen(true); },
    close() { setOpen(false); },
  };
})();
