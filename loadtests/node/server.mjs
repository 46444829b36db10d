// The Node socket.io 4.8 peer for loadtests/bench.py: the same wire shape as the
// hub's /chat for what the benchmark drives (JWT in the handshake auth, every
// socket joins user:{sub}, `typing:set` acked and broadcast to the other member's
// room as `typing:indicator`). For loadtests/crowd.py: /notifications (JWT in the
// handshake auth, the user's room) and `POST /publish-everyone` (the bearer is the
// secret), which emits its JSON body as `alert:triggered` to every /notifications
// socket. Defaults as shipped (permessage-deflate off).
//   node server.mjs PORT SECRET [REDIS_URL]
import { createServer } from "node:http";
import { Server } from "socket.io";
import jwt from "jsonwebtoken";

const [port, secret, redisUrl] = process.argv.slice(2);
// Requests that are not Socket.IO's (socket.io passes them on to this handler).
const httpServer = createServer((req, res) => {
  if (req.method !== "POST" || req.url !== "/publish-everyone" || req.headers.authorization !== `Bearer ${secret}`) {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    io.of("/notifications").emit("alert:triggered", JSON.parse(Buffer.concat(chunks).toString()));
    res.writeHead(200, { "Content-Type": "application/json" }).end("{}");
  });
});
const io = new Server(httpServer, { serveClient: false });

if (redisUrl) {
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const { createClient } = await import("redis");
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub, { key: `bench-${process.env.BENCH_RUN || "x"}` }));
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
chat.use(authenticate);
chat.on("connection", (socket) => {
  socket.join(`user:${socket.data.user}`);
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
