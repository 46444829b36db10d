// A customer and a backend service on /orders and /notifications with the official client.
// Usage: node orders_notifications.mjs URL CUSTOMER_TOKEN SERVICE_TOKEN CUSTOMER_ID [transport]
import { io } from "socket.io-client";
import { report } from "./report.mjs";

const [url, customerToken, serviceToken, customerId, transport] = process.argv.slice(2);
const timeout = setTimeout(() => { console.error("timed out"); process.exit(2); }, 20000);
const connect = (ns, token) => new Promise((resolve, reject) => {
  const s = io(url + ns, { auth: { token }, transports: transport ? [transport] : undefined, reconnection: false });
  s.on("connect", () => resolve(s));
  s.on("connect_error", (err) => reject(new Error(JSON.stringify({ message: err.message, data: err.data }))));
});
const next = (socket, event) => new Promise((resolve) => socket.once(event, resolve));

const orders = await connect("/orders", customerToken);
const notes = await connect("/notifications", customerToken);
const backend = await connect("/orders", serviceToken);
const backendNotes = await connect("/notifications", serviceToken);

const created = next(backend, "order:created");
const order = await orders.emitWithAck("order:create", {
  items: [{ product_id: 3, quantity: 4, price_krw: 2500 }],
  billing_address: "Busan 1", shipping_address: { line1: "Busan 2", zip: "48000" }, client_order_id: "js-1",
});
const staffSaw = await created;
const updated = next(orders, "order:updated");
const processing = await backend.emitWithAck("order:update-status", { order_id: order.data.order_id, status: "processing" });
const customerSaw = await updated;
const shipped = next(orders, "order:shipped");
await backend.emitWithAck("order:update-status", {
  order_id: order.data.order_id, status: "shipped", tracking_number: "JS-TRACK", estimated_delivery: "2026-12-24",
});
const shippedEvent = await shipped;
const illegal = await backend.emitWithAck("order:update-status", { order_id: order.data.order_id, status: "pending" });

const pushed = next(notes, "push:received");
const notified = await backendNotes.emitWithAck("notification:create", {
  user_id: Number(customerId), type: "order", title: "Shipped", message: "On its way",
});
const push = await pushed;
const list = await notes.emitWithAck("notifications:list", {});

for (const s of [orders, notes, backend, backendNotes]) s.disconnect();
clearTimeout(timeout);
// Exits once written: a pending long-poll request would keep node alive until the next ping.
report({ order, staffSaw, processing, customerSaw, shippedEvent, illegal, notified, push, list,
         transport: orders.io.engine.transport.name });
