// The official client and short-lived tokens: refreshed in-band (`auth:refresh`) the
// socket lives on; not refreshed, the hub sends `auth:expired` and drops the
// connection, and the client reconnects by itself with a fresh token from its
// `auth` callback, recovering its session.
// Usage: node token_refresh.mjs URL EMAIL PASSWORD TTL_SECONDS
import { io } from "socket.io-client";

const [url, email, password, ttlArg] = process.argv.slice(2);
const ttl = Number(ttlArg) * 1000;
const timeout = setTimeout(() => { console.error("timed out"); process.exit(2); }, 60000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function login() {
  const res = await fetch(`${url}/auth/login`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ email, password }),
  });
  if (res.status !== 200) throw new Error(`login: ${res.status}`);
  return (await res.json()).access_token;
}

function watch(socket) {
  const seen = { connects: 0, disconnects: [], expired: [], authCalls: 0 };
  socket.on("connect", () => { seen.connects += 1; });
  socket.on("disconnect", (reason) => seen.disconnects.push(reason));
  socket.on("auth:expired", (data) => seen.expired.push(data));
  return seen;
}

function connected(socket) {
  return socket.connected ? Promise.resolve() : new Promise((r) => socket.once("connect", r));
}

// 1. Refreshed in-band before each expiry: one connection all along.
const kept = io(`${url}/chat`, { auth: async (cb) => cb({ token: await login() }), transports: ["websocket"] });
const keptSeen = watch(kept);
await connected(kept);
const refreshes = [];
for (let i = 0; i < 3; i++) {
  await sleep(ttl / 2);
  refreshes.push(await kept.emitWithAck("auth:refresh", { token: await login() }));
}
const afterRefresh = await kept.emitWithAck("unread:count", {});
const keptResult = { ...keptSeen, disconnects: [...keptSeen.disconnects], refreshes, afterRefresh };
kept.close();

// 2. Not refreshed: told, dropped, and back by itself with a fresh token.
let authCalls = 0;
const dropped = io(`${url}/chat`, {
  forceNew: true,
  transports: ["websocket"],
  auth: (cb) => { authCalls += 1; login().then((token) => cb({ token })); },
});
const droppedSeen = watch(dropped);
await connected(dropped);
await new Promise((r) => dropped.once("disconnect", r));
await connected(dropped);
const afterReconnect = await dropped.emitWithAck("unread:count", {});

console.log(JSON.stringify({
  kept: keptResult,
  dropped: { ...droppedSeen, authCalls, recovered: dropped.recovered, afterReconnect },
}));
dropped.close(); clearTimeout(timeout);
