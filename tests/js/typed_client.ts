// The declarations of `hub types` in use: typed /chat sockets of the official client.
// tests/test_typescript.py compiles this with `tsc --strict` beside the generated
// hub.d.ts, then runs it against a live hub.
// Usage (compiled): node typed_client.js HUB_URL ANN_TOKEN BOB_TOKEN BOB_ID
import { io, type Socket } from "socket.io-client";
import type { Ack, ChatClientToServerEvents, ChatServerToClientEvents, MessageOut } from "./hub.js";

type Chat = Socket<ChatServerToClientEvents, ChatClientToServerEvents>;

const [url, annToken, bobToken, bobId] = process.argv.slice(2);
const ann: Chat = io(`${url}/chat`, { auth: { token: annToken } });
const bob: Chat = io(`${url}/chat`, { auth: { token: bobToken } });

const delivered = new Promise<string>((resolve) =>
  bob.on("message:new", (event, offset) => resolve(`${event.content} (${event.message.id}) at ${offset ?? "-"}`)));
await new Promise<void>((resolve) => bob.on("connect", () => resolve()));

const reply: Ack<MessageOut> = await ann.timeout(5000).emitWithAck(
  "message:send", { recipient_id: Number(bobId), message: "typed hello" });
if (!reply.ok) throw new Error(`message:send failed: ${reply.error.code}`);
const refused = await ann.timeout(5000).emitWithAck("message:edit", { message_id: reply.data.id, message: "" });
const code: string = refused.ok ? "no error" : refused.error.code;
console.log(JSON.stringify({ sent: reply.data.message, received: await delivered, edit: code }));
ann.close();
bob.close();

// Never called: what the compiler must refuse (each line fails the build if it passes).
export function mistakes(chat: Chat): void {
  // @ts-expect-error recipient_id is a number
  chat.emit("message:send", { recipient_id: "2", message: "hi" }, () => {});
  // @ts-expect-error there is no such operation
  chat.emit("message:sned", { recipient_id: 2, message: "hi" }, () => {});
  // @ts-expect-error a server event's fields have their types
  chat.on("message:new", (event) => { const n: number = event.content; return n; });
  // @ts-expect-error the ack holds the operation's output
  chat.emit("message:send", { recipient_id: 2, message: "hi" }, (r) => { if (r.ok) { const s: string = r.data.id; return s; } });
}
