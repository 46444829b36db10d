// Long-polling official clients through a proxy: each connects with the polling
// transport only (keeping cookies, as a browser does) and makes a few calls, each
// of which needs its Engine.IO session's instance.
// Usage: node proxy_clients.mjs URL_WITH_NAMESPACE TOKEN CLIENTS CALLS
// Prints one JSON object: {acks, errors}.
import { io } from "socket.io-client";

const [url, token, clients, calls] = process.argv.slice(2);
const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 60000);
const errors = [];
let acks = 0;

async function client() {
  const s = io(url, { transports: ["polling"], withCredentials: true, reconnection: false,
                      forceNew: true, auth: { token } });
  await new Promise((resolve, reject) => {
    s.on("connect", resolve);
    s.on("connect_error", reject);
  });
  s.on("disconnect", (reason) => errors.push(`disconnected: ${reason}`));
  for (let i = 0; i < Number(calls); i++) {
    const reply = await s.timeout(10000).emitWithAck("unread:count", {});
    if (reply.ok) acks++; else errors.push(JSON.stringify(reply.error));
  }
  s.off("disconnect");
  s.close();
}

const results = await Promise.allSettled(Array.from({ length: Number(clients) }, client));
for (const r of results) if (r.status === "rejected") errors.push(String(r.reason && r.reason.message || r.reason));
console.log(JSON.stringify({ acks, errors }));
clearTimeout(timer);
