// The client side of loadtests/live_state.py: one service socket updating R live
// resources at a rate, W watcher sockets (official socket.io-client, websocket) each
// watching one of them. Reads a JSON job from argv[2], prints one JSON line at the end.
// Bounded: connects time out, the run lasts job.seconds, the drain job.drain_s, the
// whole job job.deadline_s.
import { io } from "socket.io-client";

const job = JSON.parse(process.argv[2]);
const NS = "/notifications";
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
setTimeout(() => { out({ phase: "done", reason: "deadline" }); process.exit(3); }, job.deadline_s * 1000).unref();
const pct = (s, p) => (s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : null);

function connect(token) {
  return new Promise((resolve, reject) => {
    const s = io(job.url + NS, { transports: ["websocket"], auth: { token }, forceNew: true,
                                 reconnection: false, timeout: 20000 });
    s.once("connect", () => resolve(s));
    s.once("connect_error", (e) => { s.close(); reject(e); });
  });
}

const call = (s, event, data) => s.timeout(20000).emitWithAck(event, data);
const ids = Array.from({ length: job.resources }, (_, i) => `bench-${job.run}-${i}`);

const service = await connect(job.service_token);
for (let i = 0; i < ids.length; i += 100) {
  await Promise.all(ids.slice(i, i + 100).map((id) => call(service, "resource:update", {
    resource_type: "task", resource_id: id, status: "running", progress: 0, owners: { user_ids: [job.owner_id] },
  })));
}

// Watchers: latency from the send time the service puts in each update's result.
let received = 0;
let late = 0;
const latencies = [];
const watchers = [];
let measuring = false;
for (let i = 0; i < job.watchers; i += 100) {
  const batch = await Promise.all(Array.from({ length: Math.min(100, job.watchers - i) }, async (_, k) => {
    const s = await connect(job.watcher_token);
    const state = await call(s, "resource:watch", { resource_type: "task", resource_id: ids[(i + k) % ids.length] });
    if (!state.ok) throw new Error(JSON.stringify(state));
    s.on("resource:updated", (u) => {
      if (!measuring || !u.result) return;
      received++;
      const ms = Date.now() - u.result.t;
      latencies.push(ms);
      if (ms > 1000) late++;
    });
    return s;
  }));
  watchers.push(...batch);
}
out({ phase: "connected", watchers: watchers.length });

// The updates: every tick (100 ms at 10/s) each resource gets one, acked; a tick's
// updates that are still unacked when the next tick is due count as not kept up.
measuring = true;
const tickMs = 1000 / job.rate;
let sent = 0;
let acked = 0;
let failed = 0;
const ackLat = [];
const start = Date.now();
let progress = 0;
while (Date.now() - start < job.seconds * 1000) {
  const tickStart = Date.now();
  progress = Math.min(99, progress + 1);
  await Promise.all(ids.map(async (id) => {
    sent++;
    const t = Date.now();
    const r = await call(service, "resource:update",
                         { resource_type: "task", resource_id: id, status: "running", progress, result: { t } });
    if (r.ok) { acked++; ackLat.push(Date.now() - t); } else failed++;
  }));
  const spent = Date.now() - tickStart;
  if (spent < tickMs) await sleep(tickMs - spent);
}
const elapsed = (Date.now() - start) / 1000;
await sleep(job.drain_s * 1000);
measuring = false;
latencies.sort((a, b) => a - b);
ackLat.sort((a, b) => a - b);
out({
  phase: "done", seconds: elapsed, resources: ids.length, watchers: watchers.length,
  updates_per_s: acked / elapsed, target_updates_per_s: ids.length * job.rate, failed,
  deliveries_per_s: received / elapsed, full_deliveries_per_s: (acked * watchers.length / ids.length) / elapsed,
  delivery_p50_ms: pct(latencies, 50), delivery_p99_ms: pct(latencies, 99), over_1s: late,
  ack_p50_ms: pct(ackLat, 50), ack_p99_ms: pct(ackLat, 99),
});
for (const s of watchers) s.close();
service.close();
process.exit(0);
