// Official socket.io-clients for tests/e2e/test_faults.py: one per (user, namespace),
// each through the URL it is given (a TCP proxy of the test's, which drops,
// blackholes and re-routes them). They reconnect and recover by themselves, as
// in a browser. stdin: one JSON config line, then commands; stdout: one JSON line
// per command.
//   config: {"clients": [{"url", "ns", "token"}, ...]}           -> {"ready": n}
//   {"op": "report"} -> per client: {"events": [[event, data, offset], ...],
//                                    "connects": [recovered, ...], "connected": bool}
//   {"op": "close"}  -> {} and exit
import readline from "node:readline";
import { io } from "socket.io-client";

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const config = JSON.parse((await lines.next()).value);
const clients = config.clients.map(({ url, ns, token }) => {
  const state = { events: [], connects: [], connected: false };
  const socket = io(url + ns, { auth: { token }, transports: ["websocket"], reconnectionDelay: 200,
                                reconnectionDelayMax: 1000, timeout: 5000 });
  socket.onAny((event, ...args) => {
    const offset = args.length > 1 && typeof args[args.length - 1] === "string" ? args[args.length - 1] : null;
    state.events.push([event, args[0], offset]);
  });
  socket.on("connect", () => { state.connects.push(socket.recovered); state.connected = true; });
  socket.on("disconnect", () => { state.connected = false; });
  return { socket, state };
});
const deadline = Date.now() + 30000;
while (!clients.every((c) => c.state.connected)) {
  if (Date.now() > deadline) { console.log(JSON.stringify({ error: "clients did not connect" })); process.exit(1); }
  await new Promise((r) => setTimeout(r, 20));
}
console.log(JSON.stringify({ ready: clients.length }));
for await (const line of { [Symbol.asyncIterator]: () => lines }) {
  const { op } = JSON.parse(line);
  if (op === "report") console.log(JSON.stringify(clients.map((c) => c.state)));
  if (op === "close") {
    for (const c of clients) c.socket.close();
    console.log("{}");
    process.exit(0);
  }
}
