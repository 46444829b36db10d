// Reconnect churn racing recovery: a sender sends without pause while the receiver,
// behind a TCP proxy, is dropped again and again and recovers each time.
//
// Usage: node recovery_race.mjs RECEIVER_HUB SENDER_HUB SENDER_TOKEN RECEIVER_TOKEN RECEIVER_ID DROPS
// Prints one JSON line: the acked message ids, what the receiver got (id and offset,
// in arrival order) and how each reconnect went.
import { io } from "socket.io-client";
import { balancer } from "./balancer.mjs";
import { report } from "./report.mjs";

const [receiverHub, senderUrl, senderToken, receiverToken, receiverId, drops] = process.argv.slice(2);
const fail = (why) => { console.error(why); process.exit(2); };
setTimeout(() => fail("timed out"), 90000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (pred, ms = 15000) => {
  const end = Date.now() + ms;
  while (!pred()) { if (Date.now() > end) return false; await sleep(5); }
  return true;
};

const lb = await balancer(Number(new URL(receiverHub).port));
const connect = (url, token) => new Promise((resolve, reject) => {
  const s = io(url + "/chat", { auth: { token }, transports: ["websocket"], reconnectionDelay: 20,
                                  reconnectionDelayMax: 50 });
  s.once("connect", () => resolve(s));
  s.once("connect_error", (e) => reject(new Error(e.message)));
});
const sender = await connect(senderUrl, senderToken);
const receiver = await connect(lb.url, receiverToken);
const got = [];
const connects = [];
receiver.on("message:new", (data, offset) => got.push([data.message_id, offset ?? null]));
receiver.on("connect", () => connects.push(receiver.recovered));

const acked = [];
let sending = true;
const send = async (text) => {
  const ack = await sender.emitWithAck("message:send", { recipient_id: Number(receiverId), message: text });
  if (!ack.ok) fail("send failed: " + JSON.stringify(ack));
  return ack.data.id;
};
// A few sends in flight at all times: a steady stream, whatever the reconnects do.
const streams = [0, 1, 2, 3].map(async (n) => {
  for (let i = 0; sending; i++) acked.push(await send(`s${n}-${i}`));
});

await until(() => got.length >= 5);
for (let i = 0; i < Number(drops); i++) {
  const before = connects.length;
  lb.drop();
  if (!(await until(() => connects.length > before))) fail("did not reconnect");
  await sleep(20 + Math.random() * 60);
}
sending = false;
await Promise.all(streams);
// The last message comes after every other one: once it is here, nothing else is due.
const last = await send("last");
acked.push(last);
if (!(await until(() => got.some(([id]) => id === last)))) fail("the last message never came");
report({ acked, got, connects });
sender.close(); receiver.close(); lb.close();
