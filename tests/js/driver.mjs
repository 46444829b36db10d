// An official socket.io-client driven line by line from a test (stdin: JSON
// commands, stdout: one JSON answer per command), behind a TCP proxy the test can
// drop and resume, like a load balancer in front of the hub.
//   {"op": "connect", "url", "ns", "token"}     -> {"recovered": bool}
//   {"op": "call", "event", "data"}             -> the ack
//   {"op": "drop"} / {"op": "resume", "url"?}   -> {} (resume may point at another instance)
//   {"op": "reconnected"}                       -> {"recovered": bool} once connected again
//   {"op": "events"}                            -> [[event, data, offset], ...] received so far
import readline from "node:readline";
import { io } from "socket.io-client";
import { balancer } from "./balancer.mjs";

const lb = await balancer();
const via = lb.url;

let socket = null;
const events = [];
let connects = 0;
const waitFor = async (pred, ms = 15000) => {
  const end = Date.now() + ms;
  while (!pred()) { if (Date.now() > end) throw new Error("timed out"); await new Promise((r) => setTimeout(r, 20)); }
};

const handlers = {
  async connect({ url, ns, token }) {
    lb.to(Number(new URL(url).port));
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
    lb.pause();
    lb.drop();
    await waitFor(() => !socket.connected);
    return {};
  },
  async resume({ url }) { if (url) lb.to(Number(new URL(url).port)); lb.resume(); return {}; },
  async reconnected() { const before = connects; await waitFor(() => connects > 0 && socket.connected); return { recovered: socket.recovered, connects }; },
  async events() { return events; },
  async close() { socket?.close(); lb.close(); setTimeout(() => process.exit(0), 10); return {}; },
};

for await (const line of readline.createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line);
  try {
    console.log(JSON.stringify({ ok: true, value: await handlers[cmd.op](cmd) }));
  } catch (err) {
    console.log(JSON.stringify({ ok: false, error: String(err) }));
  }
}
