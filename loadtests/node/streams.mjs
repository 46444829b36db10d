// The load generator of loadtests/streams_bench.py: bots streaming replies into their
// dialogs, each dialog's visitor receiving them (the official socket.io-client,
// websocket transport). Reads a JSON job from argv[2]:
//   {url, bot_token, bot_sockets, visitors: [{dialog_id, token}], rate, seconds, deadline_s}
// Every dialog gets one stream; each stream sends `rate` deltas a second for `seconds`
// (open loop, a timer per stream), then ends. A delta's text is its send time (ms,
// performance.timeOrigin-based, the same clock as the receiver's); a coalesced delta
// holds several, and each counts with its own latency. Prints one JSON line.
import { io } from "socket.io-client";

const job = JSON.parse(process.argv[2]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.timeOrigin + performance.now();
setTimeout(() => { console.log(JSON.stringify({ error: "deadline" })); process.exit(3); }, job.deadline_s * 1000).unref();

function connect(token) {
  return new Promise((resolve, reject) => {
    const s = io(job.url + "/dialogs", { transports: ["websocket"], auth: { token }, forceNew: true,
                                         reconnection: false, timeout: 20000 });
    s.once("connect", () => resolve(s));
    s.once("connect_error", (e) => { s.close(); reject(e); });
  });
}

const latencies = [];
let received = 0, deltaEvents = 0, finals = 0, errors = 0;
const visitors = [];
for (let i = 0; i < job.visitors.length; i += 20) { // 20 connects at a time
  visitors.push(...await Promise.all(job.visitors.slice(i, i + 20).map(async (v) => {
    const s = await connect(v.token);
    s.on("message:delta", (d) => {
      const t = now();
      deltaEvents++;
      for (const sent of d.text.split(";")) {
        if (sent) { latencies.push(t - Number(sent)); received++; }
      }
    });
    s.on("message:added", () => { finals++; });
    return s;
  })));
}
const bots = await Promise.all(Array.from({ length: job.bot_sockets }, () => connect(job.bot_token)));
for (const b of bots) b.on("error", () => { errors++; });

let sent = 0;
const streams = await Promise.all(job.visitors.map(async (v, i) => {
  const bot = bots[i % bots.length];
  const r = await bot.emitWithAck("message:stream-start", { dialog_id: v.dialog_id });
  if (!r.ok) throw new Error(JSON.stringify(r.error));
  return { bot, id: r.data.stream_id };
}));
const period = 1000 / job.rate;
const started = now();
await Promise.all(streams.map(async (s, i) => {
  await sleep((i / streams.length) * period); // spread the streams over one period
  let next = now();
  while (now() - started < job.seconds * 1000) {
    // No ack asked: a refused delta comes back as an `error` event (counted).
    s.bot.emit("message:stream-delta", { stream_id: s.id, text: `${now()};` });
    sent++;
    next += period;
    await sleep(Math.max(0, next - now()));
  }
  const end = await s.bot.emitWithAck("message:stream-end", { stream_id: s.id });
  if (!end.ok) errors++;
}));
const drainUntil = now() + 10000;
while ((received < sent || finals < streams.length) && now() < drainUntil) await sleep(50);
latencies.sort((a, b) => a - b);
const pct = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p / 100 * latencies.length))] : null;
console.log(JSON.stringify({ streams: streams.length, sent, received, delta_events: deltaEvents, finals, errors,
  seconds: job.seconds, p50_ms: pct(50), p99_ms: pct(99), max_ms: latencies.at(-1) ?? null }));
for (const s of [...visitors, ...bots]) s.close();
process.exit(0);
