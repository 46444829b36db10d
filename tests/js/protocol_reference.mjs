// The official client against `hub conformance-server`'s reference behaviour.
// Usage: node protocol_reference.mjs URL TRANSPORT(websocket|polling) PARSER(default|msgpack) [PATH]
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";

const [url, transport, parserName, path] = process.argv.slice(2);
const timeout = setTimeout(() => { console.error("timed out"); process.exit(2); }, 20000);
const opts = (extra) => ({
  transports: transport === "polling" ? ["polling"] : ["websocket"],
  reconnection: false,
  ...(parserName === "msgpack" ? { parser: msgpackParser } : {}),
  ...(path ? { path } : {}),
  ...extra,
});

// Events emitted by the connect handler must come after the CONNECT: the first
// thing the client sees is "connect", and the socket has its id when "auth" arrives.
const connect = (nsp, extra) => new Promise((resolve, reject) => {
  const order = [];
  const s = io(url + nsp, opts(extra));
  s.on("connect", () => order.push("connect"));
  s.on("auth", (auth) => { order.push("auth"); resolve({ s, auth, order, idAtAuth: s.id }); });
  s.on("connect_error", (err) => reject(new Error("connect_error " + err.message)));
});

const main = await connect("/", { auth: { token: "123" } });
const custom = await connect("/custom");
const back = new Promise((resolve) => main.s.on("message-back", (...args) => resolve(args)));
main.s.emit("message", 1, "2", { 3: [true] }, Uint8Array.from([1, 2, 3]));
const echoed = await back;
const acked = await new Promise((resolve) =>
  main.s.emit("message-with-ack", "x", { y: [1, 2] }, Uint8Array.from([4, 5]), (...args) => resolve(args)));
const refused = await new Promise((resolve) => {
  const s = io(url + "/random", opts());
  s.on("connect", () => resolve({ connected: true }));
  s.on("connect_error", (err) => resolve({ message: err.message, data: err.data ?? null }));
});

const bin = (v) => (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) ? { bytes: Array.from(new Uint8Array(v.buffer ?? v, v.byteOffset ?? 0, v.byteLength)) } : v;
console.log(JSON.stringify({
  main: { auth: main.auth, order: main.order, idAtAuth: !!main.idAtAuth },
  custom: { auth: custom.auth, order: custom.order },
  echoed: echoed.map(bin),
  acked: acked.map(bin),
  refused,
  transport: main.s.io.engine.transport.name,
}));
main.s.close(); custom.s.close(); clearTimeout(timeout);
