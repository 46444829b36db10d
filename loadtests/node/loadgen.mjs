// The load generator of loadtests/bench.py: the official socket.io-client, websocket
// transport, one Node process (fanout receivers optionally "lean": raw websockets
// speaking the protocol themselves, see LeanSocket). Reads a JSON job from argv[2],
// prints JSON lines:
//   {"phase":"connected",...}  then waits for "go" on stdin (the bench samples memory)
//   {"phase":"step",...} per load step, {"phase":"done",...} at the end.
// Every run is bounded: steps have a fixed duration, drains a timeout, the whole job
// a deadline (job.deadline_s), after which it reports what it has and exits.
import { io } from "socket.io-client";
import { createInterface } from "node:readline";
import WebSocket from "ws";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

const job = JSON.parse(process.argv[2]);
const started = performance.now();
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
if (isMainThread)
  setTimeout(() => { out({ phase: "done", reason: "deadline" }); process.exit(3); }, job.deadline_s * 1000).unref();

function pct(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function connect(url, token, extra = {}) {
  return new Promise((resolve, reject) => {
    const s = io(url + "/chat", { transports: ["websocket"], auth: { token, ...extra }, forceNew: true,
                                 reconnection: false, timeout: 20000 });
    s.once("connect", () => resolve(s));
    s.once("connect_error", (e) => { s.close(); reject(e); });
  });
}

// A fan-out receiver without socket.io-client: one raw websocket speaking Engine.IO v4 /
// Socket.IO v5 itself, for rooms so large that the generator's receive cost rivals the
// servers' send cost (measured on a 2-core VM: ~40 us of generator CPU a delivery with
// socket.io-client, ~27 us lean; the floor, ~17-19 us, is one wakeup, read and stream
// callback per socket per message, which any Node receiver pays). Same transport, URL,
// handshake (CONNECT to /chat with the token as auth) and websocket options as the
// official client; what it skips is decoding: a typing:indicator is recognised by its
// bytes, never JSON-parsed (latency comes from sequence numbers, not from the payload).
const CHAT = "/chat";
// EIO message (4) + SIO EVENT (2) + namespace + no ack id + the event name. The hub may
// append arguments (an offset); they come after the name, so the prefix still matches.
const INDICATOR = Buffer.from(`42${CHAT},["typing:indicator"`);

class LeanSocket {
  constructor(url, token) {
    this.onIndicator = null;
    // The official client's ws options: it offers permessage-deflate (threshold 1024),
    // so whatever each server negotiates stays the same in both receiver modes.
    this.ws = new WebSocket(url.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket",
                            { perMessageDeflate: { threshold: 1024 } });
    this.token = token;
  }

  on(event, fn) {
    if (event !== "typing:indicator") throw new Error(`lean receivers handle only typing:indicator, not ${event}`);
    this.onIndicator = fn;
  }

  connect() {
    return new Promise((resolve, reject) => {
      let pending = true;
      const settle = (err) => {
        if (!pending) return;
        pending = false;
        clearTimeout(timer);
        if (err) { this.ws.terminate(); reject(err); } else resolve(this);
      };
      const timer = setTimeout(() => settle(new Error("lean connect timeout")), 20000);  // as the official client's
      this.ws.on("error", (e) => settle(e));
      this.ws.on("close", () => settle(new Error("websocket closed before the /chat connect")));
      this.ws.on("message", (data, isBinary) => {
        // Binary frames are attachments of binary packets (types 5/6): never ours.
        if (isBinary) return;
        // The hot path: compare bytes, no string decoding, no JSON.
        if (data.length > INDICATOR.length && INDICATOR.compare(data, 0, INDICATOR.length) === 0) {
          if (this.onIndicator) this.onIndicator();
          return;
        }
        // EIO4: the server pings ("2"), the client must pong ("3") within pingTimeout.
        if (data.length === 1 && data[0] === 0x32) { this.ws.send("3"); return; }
        this.slow(data.toString(), settle);
      });
    });
  }

  // Everything but the hot path: the Engine.IO packet type first, then for a message
  // (4) the Socket.IO packet: type digit, optional "/nsp,", optional ack id digits,
  // then the JSON payload.
  slow(s, settle) {
    switch (s[0]) {
      case "0":  // Engine.IO open {sid, pingInterval, ...}: connect to the namespace with auth
        this.ws.send(`40${CHAT},${JSON.stringify({ token: this.token })}`);
        return;
      case "1":  // Engine.IO close
        this.ws.close();
        return;
      case "4": break;  // a Socket.IO packet
      default: return;  // "6" noop, and nothing else is sent to a client over websocket
    }
    const type = s[1];
    let i = 2, nsp = "/";
    if (s[i] === "/") {
      const comma = s.indexOf(",", i);
      nsp = comma < 0 ? s.slice(i) : s.slice(i, comma);
      i = comma < 0 ? s.length : comma + 1;
    }
    if (nsp !== CHAT) return;
    // An ack id is only ever requested by the server's emitWithAck; the official path's
    // handler ignores the ack callback, so neither answers it.
    while (i < s.length && s.charCodeAt(i) >= 48 && s.charCodeAt(i) <= 57) i++;
    const payload = s.slice(i);
    if (type === "0") settle(null);  // CONNECT: {sid[, pid]}
    else if (type === "4") {  // CONNECT_ERROR: {message, data}
      let msg = payload;
      try { msg = JSON.parse(payload).message; } catch {}
      settle(new Error(`connect_error: ${msg}`));
    } else if (type === "2") {  // an EVENT the fast path did not take (e.g. with an ack id)
      let args;
      try { args = JSON.parse(payload); } catch { return; }
      if (Array.isArray(args) && args[0] === "typing:indicator" && this.onIndicator) this.onIndicator();
    }
    // "1" DISCONNECT: the server dropped us; like the official client, just stop receiving.
  }

  close() {
    // As socket.close() in the official client: DISCONNECT from the namespace, then the transport.
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(`41${CHAT},`);
    this.ws.close();
  }
}

const connectLean = (url, token) => new LeanSocket(url, token).connect();

async function connectMany(specs, concurrency, connectOne = connect) {
  const sockets = new Array(specs.length);
  let next = 0, failed = 0;
  const t0 = performance.now();
  async function worker() {
    while (next < specs.length) {
      const i = next++;
      try { sockets[i] = await connectOne(specs[i].url, specs[i].token); } catch (e) { failed++; }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, specs.length) }, worker));
  const seconds = (performance.now() - t0) / 1000;
  return { sockets: sockets.filter(Boolean), seconds, failed };
}

// Until every receiver's count reaches `want` (true), or `ms` pass (false).
async function drainUntil(counts, want, ms) {
  const t = performance.now();
  while (performance.now() - t < ms) {
    let min = Infinity; for (let i = 0; i < counts.length; i++) if (counts[i] < min) min = counts[i];
    if (min >= want) return true;
    await sleep(10);
  }
  return false;
}

async function waitForGo() {
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) if (line.trim() === "go") { rl.close(); return; }
}

async function fanout() {
  const specs = [];
  for (let i = 0; i < job.clients; i++) specs.push({ url: job.urls[i % job.urls.length], token: job.receiver_token });
  const receivers = job.receivers || "official";
  if (receivers !== "official" && receivers !== "lean") throw new Error(`unknown receivers ${receivers}`);
  const { sockets, seconds, failed } = await connectMany(specs, job.connect_concurrency || 100,
                                                         receivers === "lean" ? connectLean : connect);
  out({ phase: "connected", clients: sockets.length, failed, seconds, rate: sockets.length / seconds });
  if (job.wait_go) await waitForGo();
  if (!job.rates.length) { sockets.forEach((s) => s.close()); return; }

  const sender = await connect(job.sender_url, job.sender_token);
  const sendTimes = [];
  const counts = new Int32Array(sockets.length);
  const lat = [];  // latencies (ms) of the current step's messages
  let stepFirst = 0, stepLast = -1, received = 0;
  sockets.forEach((s, i) => s.on("typing:indicator", () => {
    const seq = counts[i]++;
    received++;
    if (seq >= stepFirst && seq <= stepLast) lat.push(performance.now() - sendTimes[seq]);
  }));
  let errors = 0;
  const send = () => {
    sendTimes.push(performance.now());
    sender.emit("typing:set", { other_user_id: job.receiver_id, is_typing: true }, (r) => { if (!r || !r.ok) errors++; });
  };
  // warm up (not measured): the first rate for warmup_s, then wait until all arrived
  let total = 0;
  {
    const t0 = performance.now();
    const perSecond = job.rates[0] / sockets.length;
    while (performance.now() - t0 < (job.warmup_s ?? 2) * 1000) {
      const due = Math.max(1, Math.floor(((performance.now() - t0) / 1000) * perSecond));
      while (total < due) { send(); total++; }
      await sleep(2);
    }
  }
  await drainUntil(counts, total, 10000);
  const results = [];
  for (const rate of job.rates) {
    const perSecond = rate / sockets.length;  // messages/s from the one sender
    lat.length = 0;
    stepFirst = total;
    stepLast = 1e12;
    const t0 = performance.now();
    let sent = 0;
    const stepMs = job.step_s * 1000;
    while (performance.now() - t0 < stepMs) {
      const due = Math.floor(((performance.now() - t0) / 1000) * perSecond) + 1;  // the first at t0
      while (sent < due) { send(); sent++; total++; }
      await sleep(2);
    }
    stepLast = total - 1;
    const sendSeconds = (performance.now() - t0) / 1000;
    const drained = await drainUntil(counts, total, job.drain_s * 1000);
    const elapsed = (performance.now() - t0) / 1000;
    lat.sort((a, b) => a - b);
    const expected = sent * sockets.length;
    const step = {
      phase: "step", target: rate, sent, sent_rate: sent / sendSeconds,
      deliveries: lat.length, expected, drained,
      deliveries_per_s: lat.length / sendSeconds,
      p50: pct(lat, 50), p99: pct(lat, 99), max: lat.length ? lat[lat.length - 1] : null,
      errors, drain_s: elapsed - sendSeconds,
    };
    // delivered: every delivery arrived within the drain and the sender kept the
    // rate (throughput); sustained: that, and p99 under the limit.
    step.delivered = drained && lat.length === expected && errors === 0
      && sent >= 0.95 * rate / sockets.length * job.step_s;
    step.sustained = step.delivered && step.p99 !== null && step.p99 < job.p99_ms;
    out(step);
    results.push(step);
    if (!step.delivered || step.p99 > 10 * job.p99_ms) break;
    if ((performance.now() - started) / 1000 > job.deadline_s - 3 * job.step_s) break;
  }
  sender.close();
  sockets.forEach((s) => s.close());
}

// Persisted group fan-out (loadtests/group_fanout.py): job.members' sockets (official
// client) in one group thread, one more member sending `message:send` {thread_id,
// message: its sequence number} at each step's rate; every receiver's `message:new`
// is a delivery, timed from its send. The receivers live in job.receiver_threads
// worker threads (default 1), so that reading them can take more than one core; the
// send times, each receiver's count and the measured window are shared memory.
const MAX_SENDS = 1 << 20;
const epochMs = () => performance.timeOrigin + performance.now();  // one clock for every thread

async function group() {
  const specs = [];
  for (const token of job.member_tokens)
    for (let k = 0; k < job.sockets_per_member; k++) specs.push({ url: job.urls[specs.length % job.urls.length], token });
  const shared = { times: new SharedArrayBuffer(8 * MAX_SENDS), counts: new SharedArrayBuffer(4 * specs.length),
                   window: new SharedArrayBuffer(16) };
  const sendTimes = new Float64Array(shared.times);
  const counts = new Int32Array(shared.counts);
  const win = new Float64Array(shared.window);  // [first, last] sequence number measured
  win[0] = 0; win[1] = -1;
  const threads = Math.max(1, job.receiver_threads || 1);
  const per = Math.ceil(specs.length / threads);
  const workers = [];
  for (let t = 0; t < threads; t++)
    workers.push(new Worker(new URL(import.meta.url), { argv: [process.argv[2]],
      workerData: { ...shared, specs: specs.slice(t * per, (t + 1) * per), offset: t * per } }));
  const ask = (w, msg) => new Promise((resolve) => { w.once("message", resolve); if (msg) w.postMessage(msg); });
  const ready = await Promise.all(workers.map((w) => ask(w)));
  out({ phase: "connected", clients: ready.reduce((n, r) => n + r.connected, 0),
        failed: ready.reduce((n, r) => n + r.failed, 0) });
  const sender = await connect(job.urls[0], job.sender_token, { threads: [job.thread_id] });
  let errors = 0, total = 0;
  const send = () => {
    sendTimes[total] = epochMs();
    sender.emit("message:send", { thread_id: job.thread_id, message: String(total++) },
                (r) => { if (!r || !r.ok) errors++; });
  };
  {  // warm up (not measured): the first rate for warmup_s, then until all arrived
    const t0 = performance.now();
    while (performance.now() - t0 < (job.warmup_s ?? 2) * 1000) {
      const due = Math.floor(((performance.now() - t0) / 1000) * job.rates[0]) + 1;
      while (total < due) send();
      await sleep(2);
    }
    await drainUntil(counts, total, 10000);
  }
  for (const rate of job.rates) {
    win[0] = total;
    win[1] = 1e12;
    const t0 = performance.now();
    let sent = 0;
    while (performance.now() - t0 < job.step_s * 1000) {
      const due = Math.floor(((performance.now() - t0) / 1000) * rate) + 1;
      while (sent < due && total < MAX_SENDS) { send(); sent++; }
      await sleep(2);
    }
    win[1] = total - 1;
    const sendSeconds = (performance.now() - t0) / 1000;
    const drained = await drainUntil(counts, total, job.drain_s * 1000);
    const lat = (await Promise.all(workers.map((w) => ask(w, "report")))).flat().sort((a, b) => a - b);
    const expected = sent * specs.length;
    const step = { phase: "step", target: rate, sent, sent_rate: sent / sendSeconds, deliveries: lat.length, expected,
                   drained, deliveries_per_s: lat.length / sendSeconds, p50: pct(lat, 50), p99: pct(lat, 99),
                   max: lat.length ? lat[lat.length - 1] : null, errors };
    step.delivered = drained && lat.length === expected && errors === 0 && sent >= 0.95 * rate * job.step_s;
    step.sustained = step.delivered && step.p99 !== null && step.p99 < job.p99_ms;
    out(step);
    if (!step.delivered || step.p99 > 10 * job.p99_ms) break;
  }
  sender.close();
  await Promise.all(workers.map((w) => new Promise((resolve) => { w.once("exit", resolve); w.postMessage("close"); })));
}

// One worker thread of `group`: its share of the receivers.
async function groupReceivers() {
  const { specs, offset } = workerData;
  const sendTimes = new Float64Array(workerData.times);
  const counts = new Int32Array(workerData.counts);
  const win = new Float64Array(workerData.window);
  const extra = { threads: [job.thread_id] };  // Node's peer joins these rooms; the hub ignores it
  const { sockets, failed } = await connectMany(specs, 100, (url, token) => connect(url, token, extra));
  let lat = [];
  sockets.forEach((s, i) => s.on("message:new", (ev) => {
    counts[offset + i]++;  // this thread's own slots: one writer each
    const seq = Number(ev.content);
    if (seq >= win[0] && seq <= win[1]) lat.push(epochMs() - sendTimes[seq]);
  }));
  parentPort.postMessage({ connected: sockets.length, failed });
  parentPort.on("message", (msg) => {
    if (msg === "report") {
      parentPort.postMessage(lat);
      lat = [];
    } else if (msg === "close") {
      sockets.forEach((s) => s.close());
      parentPort.close();
    }
  });
}

async function chat() {
  // job.pairs: [{url, token, recipient_id}] senders; job.recipients: [{url, token}]
  const { sockets: recipients } = await connectMany(job.recipients, 50);
  const { sockets: senders, failed } = await connectMany(job.pairs, 50);
  out({ phase: "connected", clients: senders.length + recipients.length, failed });
  let n = 0;
  // warm up (not measured), as in fanout: the first rate for warmup_s, until all acked
  {
    const t0 = performance.now();
    let sent = 0, acked = 0;
    while (performance.now() - t0 < (job.warmup_s ?? 2) * 1000) {
      const due = Math.floor(((performance.now() - t0) / 1000) * job.rates[0]) + 1;
      while (sent < due) {
        const spec = job.pairs[sent % senders.length];
        senders[sent % senders.length].emit("message:send",
          { recipient_id: spec.recipient_id, message: job.text, client_msg_id: `b${job.run}-${n++}` }, () => { acked++; });
        sent++;
      }
      await sleep(2);
    }
    const t1 = performance.now();
    while (acked < sent && performance.now() - t1 < 10000) await sleep(10);
  }
  for (const rate of job.rates) {
    const lat = [];
    let errors = 0, sent = 0, acked = 0;
    const t0 = performance.now();
    const stepMs = job.step_s * 1000;
    while (performance.now() - t0 < stepMs) {
      const due = Math.floor(((performance.now() - t0) / 1000) * rate) + 1;  // the first at t0
      while (sent < due) {
        const s = senders[sent % senders.length];
        const spec = job.pairs[sent % senders.length];
        const t = performance.now();
        s.emit("message:send", { recipient_id: spec.recipient_id, message: job.text, client_msg_id: `b${job.run}-${n++}` },
          (r) => { acked++; if (r && r.ok) lat.push(performance.now() - t); else errors++; });
        sent++;
      }
      await sleep(2);
    }
    const sendSeconds = (performance.now() - t0) / 1000;
    const t1 = performance.now();
    while (acked < sent && performance.now() - t1 < job.drain_s * 1000) await sleep(10);
    lat.sort((a, b) => a - b);
    const step = { phase: "step", target: rate, sent, sent_rate: sent / sendSeconds, acked, errors,
                   acked_per_s: lat.length / sendSeconds, p50: pct(lat, 50), p99: pct(lat, 99),
                   max: lat.length ? lat[lat.length - 1] : null };
    step.delivered = acked === sent && errors === 0 && sent >= 0.95 * rate * job.step_s;
    step.sustained = step.delivered && step.p99 !== null && step.p99 < job.p99_ms;
    out(step);
    if (!step.delivered || step.p99 > 10 * job.p99_ms) break;
  }
  senders.concat(recipients).forEach((s) => s.close());
}

if (!isMainThread) {
  await groupReceivers();  // lives until the main thread says close
} else try {
  if (job.mode === "fanout") await fanout(); else if (job.mode === "group") await group(); else await chat();
  out({ phase: "done", reason: "ok" });
  process.exit(0);
} catch (e) {
  out({ phase: "done", reason: String(e && e.stack || e) });
  process.exit(2);
}
