// Two users connect to /chat with the official client, exchange messages live.
// Usage: node chat_exchange.mjs URL TOKEN_A TOKEN_B USER_B_ID [transport]
import { io } from "socket.io-client";
import { report } from "./report.mjs";

const [url, tokenA, tokenB, userB, transport] = process.argv.slice(2);
const opts = (token) => ({ auth: { token }, transports: transport ? [transport] : undefined, reconnection: false });
const timeout = setTimeout(() => { console.error("timed out"); process.exit(2); }, 20000);

const connect = (token) => new Promise((resolve, reject) => {
  const s = io(url + "/chat", opts(token));
  s.on("connect", () => resolve(s));
  s.on("connect_error", (err) => reject(new Error(JSON.stringify({ message: err.message, data: err.data }))));
});

const a = await connect(tokenA);
const b = await connect(tokenB);
const received = new Promise((resolve) => b.on("message:new", resolve));
const ack = await a.emitWithAck("message:send", { recipient_id: Number(userB), message: "hello from js" });
if (!ack.ok) throw new Error("send failed: " + JSON.stringify(ack));
const event = await received;
const reply = new Promise((resolve) => a.on("message:new", resolve));
const ack2 = await b.emitWithAck("message:send", { thread_id: event.thread_id, message: "hi back" });
const back = await reply;
// A bad token is refused with the contract's connect_error data.
const refused = await new Promise((resolve) => {
  const s = io(url + "/chat", opts("not-a-token"));
  s.on("connect", () => resolve({ connected: true }));
  s.on("connect_error", (err) => resolve({ message: err.message, data: err.data }));
});
report({ ack, event, ack2, back, refused, transport: a.io.engine.transport.name });
a.close(); b.close(); clearTimeout(timeout);
