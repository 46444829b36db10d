// Headless Chromium for the browser tests, in a fresh temporary profile of its own.
// Usage: const chrome = await launch(executable); ... finally await chrome.close();
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export async function launch(executable) {
  const profile = mkdtempSync(join(tmpdir(), "hub-chromium-"));
  const browser = await chromium.launch({
    executablePath: executable || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           `--disk-cache-dir=${join(profile, "cache")}`],
  });
  return {
    browser,
    async close() {
      await browser.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
