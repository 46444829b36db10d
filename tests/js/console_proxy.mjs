// The operator console in headless Chromium, through a proxy: logs in and waits
// until its heartbeat is answered over the socket ("online · 0/5 chats").
// Usage: node console_proxy.mjs URL EMAIL PASSWORD [CHROMIUM]
// Prints one JSON object: {connection, queue, errors}.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, email, password, executable] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "hub-chromium-"));
const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 60000);
const WAIT = { timeout: 20000 };
const browser = await chromium.launch({
  executablePath: executable || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         `--disk-cache-dir=${join(profile, "cache")}`],
});
const errors = [];
try {
  const page = await (await browser.newContext()).newPage();
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
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
  clearTimeout(timer);
}
