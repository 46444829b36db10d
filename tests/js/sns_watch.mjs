// The official client on /sns: a post, a watcher, a like, and who hears what.
// Usage: node sns_watch.mjs URL TOKEN_AUTHOR TOKEN_WATCHER TOKEN_FAN [transport]
import { io } from "socket.io-client";

const [url, tokenA, tokenW, tokenF, transport] = process.argv.slice(2);
const opts = (token) => ({ auth: { token }, transports: transport ? [transport] : undefined, reconnection: false });
const timeout = setTimeout(() => { console.error("timed out"); process.exit(2); }, 20000);

const connect = (token) => new Promise((resolve, reject) => {
  const s = io(url + "/sns", opts(token));
  s.on("connect", () => resolve(s));
  s.on("connect_error", (err) => reject(new Error(JSON.stringify({ message: err.message, data: err.data }))));
});
const once = (socket, event) => new Promise((resolve) => socket.once(event, resolve));

const author = await connect(tokenA);
const watcher = await connect(tokenW);
const fan = await connect(tokenF);
const trending = once(watcher, "trending:updated");
const published = once(author, "post:published");
const created = await author.emitWithAck("post:create", { platforms: ["threads"], content: "from #js" });
if (!created.ok) throw new Error("create failed: " + JSON.stringify(created));
const postId = created.data.post_id;
const watch = await watcher.emitWithAck("post:watch", { post_id: postId });
let fanHeard = null;
fan.on("engagement:liked", (data) => { fanHeard = data; });
const liked = once(watcher, "engagement:liked");
const analytics = once(author, "analytics:updated");
const like = await fan.emitWithAck("post:like", { post_id: postId });
const out = {
  created, watch, like,
  published: await published, trending: await trending, liked: await liked, analytics: await analytics,
};
await new Promise((r) => setTimeout(r, 300));
out.fanHeard = fanHeard;
out.badWatch = await fan.emitWithAck("post:watch", { post_id: "x" });
out.transport = author.io.engine.transport.name;
console.log(JSON.stringify(out));
author.close(); watcher.close(); fan.close(); clearTimeout(timeout);
