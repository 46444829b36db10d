// What the official client reports when a connection is refused.
// Usage: node connect_error.mjs URL_WITH_NAMESPACE [PATH] [PARSER(default|msgpack)] [TOKEN]
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";

const [url, path, parserName, token] = process.argv.slice(2);
const timeout = setTimeout(() => { console.error("timed out"); process.exit(2); }, 20000);
const s = io(url, {
  reconnection: false,
  ...(path ? { path } : {}),
  ...(parserName === "msgpack" ? { parser: msgpackParser } : {}),
  ...(token ? { auth: { token } } : {}),
});
const result = await new Promise((resolve) => {
  s.on("connect", () => resolve({ connected: true }));
  s.on("connect_error", (err) => resolve({ message: err.message, ...(err.data !== undefined ? { data: err.data } : {}) }));
});
console.log(JSON.stringify(result));
s.close(); clearTimeout(timeout);
