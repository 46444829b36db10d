// The official client over long-polling only (through the test's slow link):
// connect to /chat, send a 2,000-character message, one over the payload limit,
// and one more. Usage: node slow_polling.mjs URL TOKEN RECIPIENT_ID BIG_CHARS
import { io } from "socket.io-client";

const [url, token, recipient, bigChars] = process.argv.slice(2);
const timeout = setTimeout(() => { console.error("timed out"); process.exit(2); }, 60000);
const s = io(url + "/chat", { transports: ["polling"], reconnection: false, auth: { token } });
const disconnects = [];
s.on("disconnect", (reason) => disconnects.push(reason));
await new Promise((resolve, reject) => {
  s.on("connect", resolve);
  s.on("connect_error", (err) => reject(err));
});
const send = (text) => s.timeout(20000).emitWithAck("message:send", { recipient_id: Number(recipient), message: text });
const normal = await send("x".repeat(2000));
const big = await send("y".repeat(Number(bigChars)));
const after = await send("z".repeat(2000));
console.log(JSON.stringify({
  normal: normal.ok ? "ok" : normal.error.code,
  big: big.ok ? "ok" : big.error.code,
  after: after.ok ? "ok" : after.error.code,
  connected: s.connected, disconnects,
}));
s.close(); clearTimeout(timeout);
