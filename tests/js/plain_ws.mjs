// Plain WebSocket clients with Node's `ws` package, as an existing app without a
// Socket.IO library would connect: Ann on EduStream's /ws/{user_id} (token in the
// first message), Bob on the generic /ws (resuming after a reconnect), REST beside.
// Usage: node plain_ws.mjs HUB_URL ANN_TOKEN ANN_REFRESH ANN_ID BOB_TOKEN BOB_ID
// Prints one JSON object with what each saw.
import WebSocket from "ws";

const [url, annToken, annRefresh, annId, bobToken, bobId] = process.argv.slice(2);
const wsUrl = url.replace("http://", "ws://");
const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 60000);

function open(path, first) {
  const ws = new WebSocket(wsUrl + path);
  const frames = [];
  const waiters = [];
  ws.on("message", (raw) => {
    frames.push(JSON.parse(raw.toString()));
    for (const w of waiters.splice(0)) w();
  });
  ws.closed = new Promise((resolve) => ws.on("close", (code) => resolve(code)));
  ws.next = async (pred) => {
    for (;;) {
      const i = frames.findIndex(pred);
      if (i >= 0) return frames.splice(i, 1)[0];
      await new Promise((r) => waiters.push(r));
    }
  };
  ws.frames = frames;
  ws.opened = new Promise((resolve) => ws.on("open", () => {
    if (first) ws.send(JSON.stringify(first));
    resolve();
  }));
  return ws;
}

async function rest(method, path, token, body) {
  const res = await fetch(url + path, {
    method, headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

let ids = 0;
async function call(ws, ns, event, data) {
  const id = ++ids;
  ws.send(JSON.stringify({ id, ns, event, data }));
  return ws.next((f) => f.id === id && "ok" in f);
}

const out = {};
try {
  const ann = open(`/ws/${annId}`, { token: annToken });
  await ann.opened;
  let bob = open(`/ws?ns=/chat&token=${bobToken}`);
  const welcome = await bob.next((f) => f.type === "welcome");

  // Bob writes over the generic socket; Ann's EduStream socket gets a flat new_message.
  const sent = await call(bob, "/chat", "message:send", { recipient_id: Number(annId), message: "hi Ann" });
  out.sent = sent;
  out.annGot = await ann.next((f) => f.type === "new_message");

  // Ann answers over REST; Bob's socket gets the event with its offset.
  const reply = await rest("POST", "/api/messages", annToken, { recipient_id: Number(bobId), message: "hi Bob" });
  const seen = await bob.next((f) => f.event === "message:new");
  out.bobSaw = seen;

  // Bob's connection ends; Ann sends two more; Bob comes back and resumes.
  bob.close();
  await bob.closed;
  const missed = [];
  for (const text of ["missed 1", "missed 2"]) {
    missed.push((await rest("POST", "/api/messages", annToken, { recipient_id: Number(bobId), message: text })).body.id);
  }
  bob = open("/ws?ns=/chat", { token: bobToken, resume: { session: welcome.session, offsets: { "/chat": seen.offset } } });
  out.resumed = await bob.next((f) => f.type === "welcome");
  const live = (await rest("POST", "/api/messages", annToken, { recipient_id: Number(bobId), message: "live" })).body.id;
  const news = [];
  for (;;) {
    const f = await bob.next((f) => f.event === "message:new");
    news.push(f.data.message_id);
    if (f.data.message_id === live) break;
  }
  out.missed = missed;
  out.live = live;
  out.afterResume = news;
  out.replyId = reply.body.id;

  // Ann logs out: her socket is closed, and the token is refused from then on.
  await rest("POST", "/auth/logout", annToken, { refresh_token: annRefresh });
  out.annClosed = await ann.closed;
  const again = open(`/ws/${annId}?token=${annToken}`);
  out.refused = await again.next(() => true);
  out.refusedCode = await again.closed;
  bob.close();
} finally {
  clearTimeout(timer);
}
console.log(JSON.stringify(out));
