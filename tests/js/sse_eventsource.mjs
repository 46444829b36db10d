// The browser's own EventSource in headless Chromium, on a page of the hub's origin.
// Usage: node sse_eventsource.mjs ORIGIN SSE_PATH COUNT [CHROMIUM]
// Prints one JSON line per EventSource happening: {type: "open"}, {type: "error"},
// and {type, id, data} for each event, until COUNT named events have arrived.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [origin, path, count, executable] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "hub-chromium-"));
const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 90000);
const browser = await chromium.launch({
  executablePath: executable || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", `--disk-cache-dir=${join(profile, "cache")}`],
});
try {
  const page = await (await browser.newContext()).newPage();
  // A blank page of the hub's origin (the hub's own responses carry CSP
  // `default-src 'none'`, which would forbid the page to connect at all).
  await page.route(origin + "/sse-test-page", (route) =>
    route.fulfill({ status: 200, contentType: "text/html", body: "<!doctype html><title>sse</title>" }));
  await page.goto(origin + "/sse-test-page");
  await page.evaluate((path) => {
    window.seen = [];
    const source = new EventSource(path);
    source.onopen = () => window.seen.push({ type: "open" });
    source.onerror = () => window.seen.push({ type: "error" });
    for (const name of ["push:received", "sync"]) {
      source.addEventListener(name, (e) => window.seen.push({ type: name, id: e.lastEventId, data: JSON.parse(e.data) }));
    }
  }, path);
  let printed = 0, named = 0;
  while (named < Number(count)) {
    const seen = await page.evaluate(() => window.seen);
    for (const item of seen.slice(printed)) {
      console.log(JSON.stringify(item));
      if (item.type !== "open" && item.type !== "error") named++;
    }
    printed = seen.length;
    await new Promise((r) => setTimeout(r, 50));
  }
} finally {
  clearTimeout(timer);
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
