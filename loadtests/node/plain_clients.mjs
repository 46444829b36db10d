// N plain WebSocket clients (the `ws` package) on the hub's generic /ws, for
// loadtests/broadcast_cost.py: connect, print {"phase": "connected", "clients"},
// count frames, and exit when a line arrives on stdin.
// Usage: node plain_clients.mjs '{"url": "http://...", "token": "...", "clients": 500}'
import WebSocket from "ws";

const job = JSON.parse(process.argv[2]);
const url = job.url.replace("http://", "ws://") + `/ws?ns=/chat&token=${job.token}`;
let ready = 0, frames = 0;
const sockets = [];
for (let i = 0; i < job.clients; i++) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on("message", (raw) => {
    frames++;
    if (frames <= job.clients && raw.toString().includes('"welcome"') && ++ready === job.clients) {
      console.log(JSON.stringify({ phase: "connected", clients: ready }));
    }
  });
  sockets.push(ws);
}
process.stdin.once("data", () => {
  console.log(JSON.stringify({ phase: "done", frames }));
  for (const ws of sockets) ws.terminate();
  process.exit(0);
});
