// The Node socket.io 4.8 peer for loadtests/bench.py: the same wire shape as the
// hub's /chat for what the benchmark drives (JWT in the handshake auth, every
// socket joins user:{sub}, `typing:set` acked and broadcast to the other member's
// room as `typing:indicator`). For loadtests/crowd.py: /notifications (JWT in the
// handshake auth, the user's room) and `POST /publish-everyone` (the bearer is the
// secret), which emits its JSON body as `alert:triggered` to every /notifications
// socket. For loadtests/bus_rooms.py: `POST /publish-room` {room, event, data} emits to a
// /notifications room. With REDIS_URL the classic Redis adapter, or with
// BENCH_ADAPTER=sharded the sharded one (Redis 7 sharded pub/sub, a channel per room:
// "dynamic" subscriptions). Defaults as shipped (permessage-deflate off).
//   node server.mjs PORT SECRET [REDIS_URL]
import { createServer } from "node:http";
import { Server } from "socket.io";
import jwt from "jsonwebtoken";

const [port, secret, redisUrl] = process.argv.slice(2);
// Requests that are not Socket.IO's (socket.io passes them on to this handler).
const PUBLISH = {
  "/publish-everyone": (body) => io.of("/notifications").emit("alert:triggered", body),
  "/publish-room": (body) => io.of("/notifications").to(String(body.room)).emit(String(body.event), body.data),
};
const httpServer = createServer((req, res) => {
  const publish = PUBLISH[req.url];
  if (req.method !== "POST" || !publish || req.headers.authorization !== `Bearer ${secret}`) {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    publish(JSON.parse(Buffer.concat(chunks).toString()));
    res.writeHead(200, { "Content-Type": "application/json" }).end("{}");
  });
});
const io = new Server(httpServer, { serveClient: false });

if (redisUrl) {
  const { createAdapter, createShardedAdapter } = await import("@socket.io/redis-adapter");
  const { createClient } = await import("redis");
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const key = `bench-${process.env.BENCH_RUN || "x"}`;
  io.adapter(process.env.BENCH_ADAPTER === "sharded"
    ? createShardedAdapter(pub, sub, { channelPrefix: key, subscriptionMode: "dynamic" })
    : createAdapter(pub, sub, { key }));
}

function authenticate(socket, next) {
  try {
    const claims = jwt.verify(socket.handshake.auth?.token || "", secret, { algorithms: ["HS256"] });
    socket.data.user = Number(claims.sub);
    next();
  } catch (e) {
    next(Object.assign(new Error("unauthorized"), { data: { code: "unauthorized" } }));
  }
}

io.of("/notifications").use(authenticate).on("connection", (socket) => socket.join(`user:${socket.data.user}`));
const chat = io.of("/chat");
let sent = 0;
const counts = new Map();  // thread id -> messages sent to it
const ONE_EVENT = process.env.BENCH_GROUP_ONE_EVENT === "1";
chat.use(authenticate);
chat.on("connection", (socket) => {
  socket.join(`user:${socket.data.user}`);
  // loadtests/group_fanout.py: a group thread's members join its room (the hub looks
  // membership up; the peer takes it from the handshake), and a message to it is
  // broadcast as the hub's contract has it (message:new with the whole Message, then
  // thread:updated with the count, to every member) but volatile: nothing stored,
  // no offsets. Acked with the Message. BENCH_GROUP_ONE_EVENT=1: message:new only
  // (the measurement of Node).
  for (const t of socket.handshake.auth?.threads || []) socket.join(`thread:${Number(t)}`);
  socket.on("message:send", (req, ack) => {
    const thread = req && Number(req.thread_id);
    if (!Number.isInteger(thread)) return ack && ack({ ok: false, error: { code: "validation_error" } });
    const id = ++sent, now = new Date().toISOString(), text = String(req.message);
    const message = { id, thread_id: thread, sender_id: socket.data.user, recipient_id: null, message: text,
                      booking_id: null, is_read: false, created_at: now, edited_at: null,
                      client_msg_id: req.client_msg_id ?? null, attachments: [] };
    socket.to(`thread:${thread}`).emit("message:new", { message_id: id, thread_id: thread, sender_id: socket.data.user,
                                                         content: text, timestamp: now, message });
    counts.set(thread, (counts.get(thread) || 0) + 1);
    if (!ONE_EVENT)
      chat.to(`thread:${thread}`).emit("thread:updated", { thread_id: thread, message_count: counts.get(thread) });
    if (ack) ack({ ok: true, data: message });
  });
  socket.on("typing:set", (req, ack) => {
    const other = req && Number(req.other_user_id);
    if (!Number.isInteger(other)) return ack && ack({ ok: false, error: { code: "validation_error" } });
    chat.to(`user:${other}`).emit("typing:indicator",
      { thread_id: req.thread_id ?? null, user_id: socket.data.user, is_typing: !!req.is_typing });
    if (ack) ack({ ok: true, data: {} });
  });
});

httpServer.listen(Number(port), "127.0.0.1", () => console.log(`node peer listening on ${port}`));
process.on("SIGTERM", () => process.exit(0));
