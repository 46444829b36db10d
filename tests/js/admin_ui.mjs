// The official Socket.IO Admin UI served by the hub (/admin-ui/), in headless
// Chromium: connect one /chat socket per entry of config.users (each to its own
// instance), then log in with an admin token (any user name, the token as password)
// and wait until the UI lists every server, every socket and each socket's user
// room, then one event each socket sends.
// Usage: node admin_ui.mjs '{"chromium", "ui", "token", "users": [{url, token, room}], "servers": [...], "shot"}'
import { io } from "socket.io-client";
import { launch } from "./browser.mjs";

const config = JSON.parse(process.argv[2]);
const WAIT = { timeout: 20000 };
const chrome = await launch(config.chromium);
const sockets = [];
const refused = [];
try {
  for (const user of config.users) {
    const socket = io(`${user.url}/chat`, { auth: { token: user.token }, transports: ["websocket"] });
    sockets.push(socket);
    await new Promise((resolve, reject) => { socket.on("connect", resolve); socket.on("connect_error", reject); });
  }
  const page = await chrome.browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") refused.push(m.text()); });
  await page.goto(`${config.ui}/admin-ui/`);
  await page.getByLabel("Server URL").fill(config.ui);
  await page.getByLabel("Username").fill("admin");
  await page.getByLabel("Password").fill(config.token);
  await page.getByRole("button", { name: "Connect" }).click();
  await page.getByText("connected", { exact: true }).first().waitFor(WAIT);

  const shown = async (path, texts, namespace) => {
    await page.evaluate((p) => { window.location.hash = `#/${p}`; }, path);
    if (namespace) {  // the sockets and rooms pages list one namespace at a time
      await page.locator(".selector .v-select__slot").first().click();
      await page.getByRole("option", { name: namespace, exact: true }).click();
    }
    try {
      for (const text of texts) await page.getByText(text).first().waitFor(WAIT);
    } catch (e) {
      if (config.shot) await page.screenshot({ path: `${config.shot}.${path}-failed.png` });
      throw e;
    }
  };
  await shown("servers", config.servers);
  await shown("sockets", sockets.map((s) => s.id), "/chat");
  await shown("rooms", config.users.map((u) => u.room), "/chat");
  // Events received, on each instance (one distinct operation per socket).
  const calls = ["unread:count", "threads:list"].slice(0, sockets.length);
  await Promise.all(sockets.map((s, i) => s.timeout(10000).emitWithAck(calls[i], {})));
  await shown("events", calls, "/chat");
  if (config.shot) await page.screenshot({ path: config.shot });
  console.log(JSON.stringify({ ok: true, sockets: sockets.map((s) => s.id), refused }));
} finally {
  for (const socket of sockets) socket.close();
  await chrome.close();
}
