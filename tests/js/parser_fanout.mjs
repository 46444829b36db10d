// JSON and msgpack clients of one hub user, over websocket and long-polling, all in
// the user's room, receive what another user sends; the msgpack client also sends.
// Usage: node parser_fanout.mjs SENDER_URL RECEIVER_URL TOKEN_A TOKEN_B USER_B_ID
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";

const [senderUrl, receiverUrl, tokenA, tokenB, userB] = process.argv.slice(2);
const timeout = setTimeout(() => { console.error("timed out"); process.exit(2); }, 30000);
const MSGPACK_PATH = "/socket.io-msgpack/";

const connect = (url, token, transport, parser) => new Promise((resolve, reject) => {
  const s = io(url + "/chat", {
    auth: { token }, reconnection: false, transports: [transport],
    ...(parser === "msgpack" ? { parser: msgpackParser, path: MSGPACK_PATH } : {}),
  });
  s.on("connect", () => resolve(s));
  s.on("connect_error", (err) => reject(new Error(`${parser}/${transport}: ${err.message}`)));
});

const kinds = [["websocket", "msgpack"], ["polling", "msgpack"], ["websocket", "default"], ["polling", "default"]];
const receivers = [];
for (const [transport, parser] of kinds) {
  receivers.push({ name: `${parser}/${transport}`, s: await connect(receiverUrl, tokenB, transport, parser) });
}
const got = receivers.map(({ name, s }) => new Promise((resolve) => {
  const texts = [];
  s.on("message:new", (m) => { texts.push(m.message.message); if (texts.length === 3) resolve([name, texts, s.io.engine.transport.name]); });
}));

// The sender is a msgpack websocket client; three messages in a row.
const sender = await connect(senderUrl, tokenA, "websocket", "msgpack");
const acks = [];
for (const text of ["one", "two", "three"]) {
  acks.push(await sender.emitWithAck("message:send", { recipient_id: Number(userB), message: text }));
}
const results = Object.fromEntries((await Promise.all(got)).map(([name, texts, transport]) => [name, { texts, transport }]));

// A bad token over msgpack: the contract's connect_error data.
const refused = await new Promise((resolve) => {
  const s = io(receiverUrl + "/chat", { auth: { token: "bad" }, reconnection: false, parser: msgpackParser, path: MSGPACK_PATH });
  s.on("connect", () => resolve({ connected: true }));
  s.on("connect_error", (err) => { resolve({ message: err.message, data: err.data }); s.close(); });
});

console.log(JSON.stringify({ acks: acks.map((a) => a.ok), results, refused }));
sender.close(); receivers.forEach(({ s }) => s.close()); clearTimeout(timeout);
