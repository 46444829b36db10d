// The operator console in headless Chromium, through a proxy: logs in and waits
// until its heartbeat is answered over the socket ("online · 0/5 chats").
// Usage: node console_proxy.mjs URL EMAIL PASSWORD [CHROMIUM]
// Prints one JSON object: {connection, queue, errors}.
import { launch } from "./browser.mjs";

const [url, email, password, executable] = process.argv.slice(2);
const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 60000);
const WAIT = { timeout: 20000 };
const chrome = await launch(executable);
const errors = [];
try {
  const page = await (await chrome.browser.newContext()).newPage();
  page.on("pageerror", (err) => errors.push(`page error: ${err.message}`));
  page.on("console", (msg) => { if (msg.type() === "error") errors.push(`console: ${msg.text()}`); });
  await page.goto(`${url}/console`);
  await page.locator("#email").fill(email);
  await page.locator("#password").fill(password);
  await page.locator("#login button[type=submit]").click();
  const connection = page.locator("#connection");
  try {
    await connection.filter({ hasText: /^online · / }).waitFor(WAIT);
  } catch (err) {
    errors.push(`not connected: ${await connection.textContent()}`);
  }
  const queue = await page.locator("#queue-size").textContent();
  console.log(JSON.stringify({ connection: await connection.textContent(), queue, errors }));
} finally {
  await chrome.close();
  clearTimeout(timer);
}
