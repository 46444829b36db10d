// An official socket.io-client driven line by line from a test (stdin: JSON
// commands, stdout: one JSON answer per command), behind a TCP proxy the test can
// drop and resume, like a load balancer in front of the hub.
//   {"op": "connect", "url", "ns", "token"}     -> {"recovered": bool}
//   {"op": "call", "event", "data"}             -> the ack
//   {"op": "drop"} / {"op": "resume", "url"?}   -> {} (resume may point at another instance)
//   {"op": "reconnected"}                       -> {"recovered": bool} once connected again
//   {"op": "events"}                            -> [[event, data, offset], ...] received so far
import net from "node:net";
import readline from "node:readline";
import { io } from "socket.io-client";

let target = null;
let paused = false;
const open = new Set();
const proxy = net.createServer((client) => {
  if (paused || !target) return client.destroy();
  const upstream = net.connect(target, "127.0.0.1");
  for (const [a, b] of [[client, upstream], [upstream, client]]) {
    a.pipe(b);
    a.on("error", () => b.destroy());
    a.on("close", () => b.destroy());
  }
  open.add(client); open.add(upstream);
  client.on("close", () => { open.delete(client); open.delete(upstream); });
});
await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
const via = `http://127.0.0.1:${proxy.address().port}`;

let socket = null;
const events = [];
let connects = 0;
const waitFor = async (pred, ms = 15000) => {
  const end = Date.now() + ms;
  while (!pred()) { if (Date.now() > end) throw new Error("timed out"); await new Promise((r) => setTimeout(r, 20)); }
};

const handlers = {
  async connect({ url, ns, token }) {
    target = Number(new URL(url).port);
    socket = io(via + ns, { auth: { token }, transports: ["websocket"], reconnectionDelay: 200, reconnectionDelayMax: 400 });
    socket.onAny((event, ...args) => {
      const offset = args.length > 1 && typeof args[args.length - 1] === "string" ? args[args.length - 1] : null;
      events.push([event, args[0], offset]);
    });
    socket.on("connect", () => connects++);
    await waitFor(() => connects === 1);
    return { recovered: socket.recovered };
  },
  async call({ event, data }) { return socket.emitWithAck(event, data ?? {}); },
  async drop() {
    paused = true;
    for (const s of open) s.destroy();
    await waitFor(() => !socket.connected);
    return {};
  },
  async resume({ url }) { if (url) target = Number(new URL(url).port); paused = false; return {}; },
  async reconnected() { const before = connects; await waitFor(() => connects > 0 && socket.connected); return { recovered: socket.recovered, connects }; },
  async events() { return events; },
  async close() { socket?.close(); proxy.close(); for (const s of open) s.destroy(); setTimeout(() => process.exit(0), 10); return {}; },
};

for await (const line of readline.createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line);
  try {
    console.log(JSON.stringify({ ok: true, value: await handlers[cmd.op](cmd) }));
  } catch (err) {
    console.log(JSON.stringify({ ok: false, error: String(err) }));
  }
}
