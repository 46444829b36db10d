// Connection state recovery with the official client, through a TCP proxy that
// plays the load balancer: it can drop every connection, refuse new ones for a
// while, and send the next ones to another instance.
//
// Usage: node recovery.mjs MODE TARGET1 TARGET2 SENDER_URL SENDER_TOKEN RECEIVER_TOKEN RECEIVER_ID [HUB1_PID]
//   MODE: same    drop, reconnect to TARGET1
//         other   drop, reconnect to TARGET2
//         sigterm SIGTERM the hub on TARGET1 (HUB1_PID); the client reconnects to TARGET2
//         revoke  drop, log the receiver out meanwhile, reconnect: must be refused
//         window  drop for longer than the (short) recovery window, then catch up with `sync`
// Prints one JSON line: what the receiver saw.
import { io } from "socket.io-client";
import { balancer } from "./balancer.mjs";
import { report } from "./report.mjs";

const [mode, target1, target2, senderUrl, senderToken, receiverToken, receiverId, hub1Pid] = process.argv.slice(2);
const portOf = (url) => Number(new URL(url).port);
const fail = (why) => { console.error(why); process.exit(2); };
setTimeout(() => fail("timed out"), 45000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const lb = await balancer(portOf(target1));
const proxyUrl = lb.url;

const connect = (url, token, opts = {}) => new Promise((resolve, reject) => {
  const s = io(url + "/chat", { auth: { token }, transports: ["websocket"], reconnectionDelay: 200,
                                  reconnectionDelayMax: 400, ...opts });
  s.once("connect", () => resolve(s));
  s.once("connect_error", (e) => reject(new Error(JSON.stringify({ message: e.message, data: e.data }))));
});

const sender = await connect(senderUrl, senderToken);
const receiver = await connect(proxyUrl, receiverToken);
const seen = [];
const offsets = [];
const reasons = [];
const connects = [];
receiver.on("message:new", (data, offset) => { seen.push(data.content); offsets.push(offset ?? null); });
receiver.on("disconnect", (reason) => reasons.push(reason));
receiver.on("connect", () => connects.push({ recovered: receiver.recovered }));
let connectError = null; // the server's refusal (transport errors while the proxy refuses have no data)
receiver.on("connect_error", (e) => { if (e.data) connectError = { message: e.message, data: e.data }; });

const send = async (from, to) => {
  for (let i = from; i < to; i++) {
    const ack = await sender.emitWithAck("message:send", { recipient_id: Number(receiverId), message: `m${i}` });
    if (!ack.ok) fail("send failed: " + JSON.stringify(ack));
  }
};
const until = async (pred, ms = 15000) => {
  const end = Date.now() + ms;
  while (!pred()) { if (Date.now() > end) return false; await sleep(20); }
  return true;
};

await send(0, 5);
if (!(await until(() => seen.length >= 5))) fail("live messages did not arrive: " + JSON.stringify(seen));
const firstOffsets = offsets.slice();

if (mode === "sigterm") {
  lb.to(portOf(target2));
  process.kill(Number(hub1Pid), "SIGTERM");
} else {
  lb.pause();
  lb.drop();
  if (mode === "other") lb.to(portOf(target2));
}
if (!(await until(() => reasons.length >= 1))) fail("the receiver never noticed the drop");

await send(5, 15); // acknowledged while the receiver is away

if (mode === "revoke") {
  const res = await fetch(senderUrl.replace(/\/$/, "") + "/auth/logout",
    { method: "POST", headers: { Authorization: `Bearer ${receiverToken}` } });
  if (res.status !== 200) fail("logout failed " + res.status);
}
let synced = null;
if (mode === "window") await sleep(2500); // longer than HUB_RECOVERY_WINDOW in that test
lb.resume();

if (mode === "revoke") {
  await until(() => connectError !== null || connects.length > 0, 10000);
} else {
  if (!(await until(() => connects.length >= 1, 15000))) fail("did not reconnect");
  if (mode === "window" && !receiver.recovered) {
    // The documented recipe: not recovered -> catch up from durable storage.
    synced = [];
    let cursor = null;
    for (;;) {
      const ack = await receiver.emitWithAck("sync", cursor ? { since: cursor } : {});
      if (!ack.ok) fail("sync failed " + JSON.stringify(ack));
      synced.push(...ack.data.items.map((m) => m.message));
      cursor = ack.data.cursor;
      if (!ack.data.has_more) break;
    }
  }
  await send(15, 20);
  await until(() => seen.length >= 20 - (mode === "window" ? 10 : 0), 10000);
  await sleep(300); // anything extra (a duplicate) would arrive now
}
report({ seen, offsets, firstOffsets, reasons, connects, connectError, synced, recovered: receiver.recovered });
sender.close(); receiver.close(); lb.close();
