// One generator process of loadtests/crowd.py: many idle authenticated connections
// to one namespace, each a raw websocket speaking Engine.IO v4 / Socket.IO v5 itself
// (as loadgen.mjs's lean receivers: the official client's transport and handshake,
// without its per-socket cost), bound to the given loopback source addresses so
// that more connections fit than one address has ports. Reads a JSON job from
// argv[2]: {url, ns, clients, addresses, concurrency, event, deadline_s}, and the
// connections' tokens (a JSON array, one per connection) as stdin's first line.
// Prints JSON lines: {"phase":"connected", clients, failed, error (the first), seconds}; then, for each
// line "report" on stdin, {"phase":"report", latencies: [[ms, ...] per broadcast]},
// where a broadcast's data carries {alert_id: its index, message: its send time in
// epoch milliseconds}; "close" ends it.
import { createInterface } from "node:readline";
import WebSocket from "ws";

const job = JSON.parse(process.argv[2]);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
setTimeout(() => { out({ phase: "done", reason: "deadline" }); process.exit(3); }, job.deadline_s * 1000).unref();

const now = () => performance.timeOrigin + performance.now();  // epoch ms, as the sender's clock
const NSP = `${job.ns},`;  // after "4" (EIO message) and the SIO packet type
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const tokens = JSON.parse((await lines.next()).value);
const latencies = [];  // per broadcast index: ms from its send to each arrival

function connectOne(i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(job.url.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket",
                             { perMessageDeflate: false, localAddress: job.addresses[i % job.addresses.length] });
    let pending = true;
    const settle = (err) => {
      if (!pending) return;
      pending = false;
      clearTimeout(timer);
      if (err) { ws.terminate(); reject(err); } else resolve(ws);
    };
    const timer = setTimeout(() => settle(new Error("connect timeout")), 30000);
    ws.on("error", (e) => settle(e));
    ws.on("close", () => settle(new Error("closed before the namespace connect")));
    ws.on("message", (data) => {
      const s = data.toString();
      if (s === "2") { ws.send("3"); return; }  // EIO4 ping -> pong
      if (s[0] === "0") { ws.send(`40${job.ns},${JSON.stringify({ token: tokens[i] })}`); return; }
      if (s[0] !== "4" || !s.startsWith(NSP, 2)) return;
      const body = s.slice(2 + NSP.length);
      if (s[1] === "0") settle(null);  // CONNECT
      else if (s[1] === "4") settle(new Error(`connect_error: ${body}`));
      else if (s[1] === "2") {
        const at = now();
        const args = JSON.parse(body);
        if (args[0] !== job.event) return;
        const n = Number(args[1].alert_id);
        (latencies[n] ||= []).push(Math.round((at - Number(args[1].message)) * 10) / 10);
      }
    });
  });
}

const sockets = [];
let next = 0, failed = 0, error = null;
const t0 = performance.now();
async function worker() {
  while (next < job.clients) {
    const i = next++;
    try { sockets.push(await connectOne(i)); } catch (e) { failed++; error ||= String(e.message || e); }
  }
}
await Promise.all(Array.from({ length: Math.min(job.concurrency, job.clients) }, worker));
out({ phase: "connected", clients: sockets.length, failed, error, seconds: (performance.now() - t0) / 1000 });

for (let line = await lines.next(); !line.done; line = await lines.next()) {
  if (line.value.trim() === "report") out({ phase: "report", latencies });
  else if (line.value.trim() === "close") break;
}
sockets.forEach((ws) => ws.terminate());
process.exit(0);
