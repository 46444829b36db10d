// The whole support-desk story in headless Chromium: a visitor in the widget on another
// website, the bot, a handoff, two operators' consoles on two hub instances, routing to
// the queue, canned reply, internal note, typing, reload on both sides, transfer, close,
// transcript, the offline form, logout; phone width; axe-core on both pages.
// Usage: node handoff_ui.mjs CONFIG_JSON, CONFIG = {hubA, hubB, shop, noIdPage, anna, boris,
// password, artifacts, chromium}; noIdPage embeds the widget without an assistant id.
// Screenshots go to CONFIG.artifacts. Prints one JSON object with what each side saw;
// every check that can fail here throws.
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { launch } from "./browser.mjs";

const config = JSON.parse(process.argv[2]);
mkdirSync(config.artifacts, { recursive: true });
const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 170000);
const WAIT = { timeout: 20000 };
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

const chrome = await launch(config.chromium);
const browser = chrome.browser;
const logs = [];
const seen = {};
const pages = [];
const shot = (page, name) => page.screenshot({ path: join(config.artifacts, `${name}.png`) });

function check(ok, what) {
  if (!ok) throw new Error("check failed: " + what);
}

async function visible(page, selector) {
  return page.locator(selector).isVisible();
}

async function axe(page, name) {
  // Evaluated through the DevTools protocol: a <script> tag would be refused by the pages' CSP.
  await page.evaluate(AXE);
  const result = await page.evaluate(async () => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  seen[`axe_${name}`] = bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}

async function login(page, hub, email) {
  await page.goto(`${hub}/console`);
  // logged out: only the login form shows, no header controls
  check(await visible(page, "#login"), "login form visible before login");
  check(!(await visible(page, "#me")), "header controls hidden while logged out");
  check(!(await visible(page, "#console-view")), "console hidden while logged out");
  await page.locator("#email").fill(email);
  await page.locator("#password").fill(config.password);
  await page.locator("#login button[type=submit]").click();
  await page.locator("#connection.online").waitFor(WAIT);
  // logged in: the console only, the login form is gone (console.css once overrode [hidden])
  check(!(await visible(page, "#login")), "login form hidden after login");
  check(await visible(page, "#console-view"), "console visible after login");
  check(await visible(page, "#me"), "header controls visible after login");
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const visitor = await context.newPage();
  const anna = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  const borisContext = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // Desktop notifications are allowed for Boris; the page's calls are recorded to be checked.
  await borisContext.grantPermissions(["notifications"]);
  await borisContext.addInitScript(() => {
    window.__notified = [];
    const Native = window.Notification;
    window.Notification = class extends Native {
      constructor(title, options) { super(title, options); window.__notified.push(title); }
    };
  });
  const boris = await borisContext.newPage();
  pages.push(["visitor", visitor], ["anna", anna], ["boris", boris]);
  for (const [name, page] of pages) {
    page.on("pageerror", (err) => logs.push(`${name} page error: ${err.message}`));
    page.on("console", (msg) => { if (msg.type() === "error") logs.push(`${name} console: ${msg.text()}`); });
  }
  const w = (selector) => visitor.locator(`#hub-widget ${selector}`);

  // A page without an assistant id says so clearly.
  const noId = await context.newPage();
  noId.on("pageerror", (err) => logs.push(`demo page error: ${err.message}`));
  noId.on("console", (msg) => { if (msg.type() === "error") logs.push(`demo console: ${msg.text()}`); });
  await noId.goto(config.noIdPage);
  await noId.locator("#hub-widget #toggle").click();
  seen.noAssistant = await noId.locator("#hub-widget #error").filter({ hasText: "not set up" }).textContent(WAIT);
  await noId.close();

  // The visitor opens the widget: the assistant's title, colour and greeting.
  await visitor.goto(config.shop);
  await w("#toggle").click();
  seen.greeting = await w("li.greeting").textContent(WAIT);
  seen.title = await w("#title").textContent();
  seen.accent = await w("header").evaluate((node) => getComputedStyle(node).backgroundColor);
  await w("#status").filter({ hasText: "assistant" }).waitFor(WAIT);
  await w("#input").fill("Hello bot, where is my parcel?");
  await w("#input").press("Enter");
  seen.botReply = await w("li.assistant").first().textContent(WAIT);
  seen.timestamp = await w("li.assistant time").first().textContent();
  await shot(visitor, "01-widget-bot");

  // Two operators log in on two instances; each sees the other online, by name.
  await login(anna, config.hubB, config.anna.email);
  await login(boris, config.hubA, config.boris.email);
  await boris.locator("#operators li").filter({ hasText: config.anna.name }).filter({ hasText: "online" }).waitFor(WAIT);
  await anna.locator("#operators li").filter({ hasText: config.boris.name }).filter({ hasText: "online" })
    .waitFor(WAIT);

  // The visitor asks for a human and waits in line.
  await w("#human").click();
  // (its place counts every dialog waiting in the shared test database, other tests' too)
  seen.waiting = await w("#status").filter({ hasText: /#\d+ in line/ }).textContent(WAIT);

  // The queue item: who, where from, what they wrote first, how long they wait.
  // (this visitor's: other tests' dialogs may wait in the shared test database too)
  const item = anna.locator("#queue li[data-dialog-id]").filter({ hasText: "where is my parcel" }).first();
  await item.waitFor(WAIT);
  seen.dialogId = Number(await item.getAttribute("data-dialog-id"));
  seen.queueItem = await item.textContent();
  const waited = await item.locator("[data-since]").textContent();
  await anna.waitForFunction((before) => document.querySelector("#queue [data-since]").textContent !== before,
                             waited, WAIT);
  await shot(anna, "02-console-queue");

  // Anna accepts: the chat opens with the whole history, the header stays on screen, the counter moves.
  await item.locator("button.accept").click();
  await anna.locator("#messages li.assistant").filter({ hasText: "parcel" }).waitFor(WAIT);
  seen.headerTop = (await anna.locator("header").boundingBox()).y;
  await anna.locator("#connection").filter({ hasText: "1/5 chats" }).waitFor(WAIT);
  await boris.locator(`#queue li[data-dialog-id="${seen.dialogId}"]`).waitFor({ state: "detached", ...WAIT });
  seen.joined = await w("#status").filter({ hasText: "operator has joined" }).textContent(WAIT);

  // A canned reply, typed as /shortcut.
  await anna.locator("#canned-manage").click();
  await anna.locator("#canned-shortcut").fill("hello");
  await anna.locator("#canned-text").fill("Hi, I am Anna from support. How can I help?");
  await anna.locator("#canned-form button[type=submit]").click();
  await anna.locator("#canned-list li").filter({ hasText: "/hello" }).waitFor(WAIT);
  await anna.locator("#canned-done").click();
  await anna.locator("#text").fill("/hel");
  const suggestion = anna.locator("#canned-suggest li");
  await suggestion.filter({ hasText: "Anna from support" }).waitFor(WAIT);
  const chosen = suggestion.filter({ hasText: "Anna from support" }).and(anna.locator("[aria-selected=true]"));
  for (let i = 0; i < 20 && !(await chosen.count()); i++) await anna.locator("#text").press("ArrowDown");
  await anna.locator("#text").press("Enter"); // picks the suggestion
  await anna.locator("#text").press("Enter"); // sends it
  seen.seenByVisitor = await w("li.operator").filter({ hasText: "Anna from support" }).textContent(WAIT);

  // An internal note: operators only.
  await anna.locator("#mode-note").click();
  await anna.locator("#text").fill("VIP customer: parcel 42 is late");
  await anna.locator("#send-button").click();
  await anna.locator("#messages li.note").filter({ hasText: "VIP" }).waitFor(WAIT);
  await anna.locator("#mode-reply").click();

  // Typing both ways, then the visitor's answer.
  await w("#input").pressSequentially("Thank you, Anna!", { delay: 120 });
  seen.typingToOperator = await anna.locator("#typing").filter({ hasText: "typing" }).textContent(WAIT);
  await w("#send").click();
  await anna.locator("#messages li.visitor").filter({ hasText: "Thank you, Anna" }).waitFor(WAIT);
  await anna.locator("#text").pressSequentially("Let me check that", { delay: 120 });
  seen.typingToVisitor = await w("#typing").filter({ hasText: "Typing" }).textContent(WAIT);
  await anna.locator("#text").press("Enter");
  await w("li.operator").filter({ hasText: "Let me check that" }).waitFor(WAIT);
  seen.noteLeaked = (await w("#messages").textContent()).includes("VIP");
  await shot(anna, "03-console-chat");
  await shot(visitor, "04-widget-operator");

  // Reload on both sides: the held chat reopens with history and notes; the widget resumes.
  await anna.reload();
  await anna.locator("#messages li.note").filter({ hasText: "VIP" }).waitFor(WAIT);
  await anna.locator("#messages li.visitor").filter({ hasText: "Thank you, Anna" }).waitFor(WAIT);
  seen.reloadedChats = await anna.locator("#chats li").count();
  await visitor.reload();
  await w("#toggle").click();
  await w("li.operator").filter({ hasText: "Let me check that" }).waitFor(WAIT);

  // Transfer to Boris, who accepts.
  const target = anna.locator("#transfer-to option", { hasText: config.boris.name });
  await anna.locator("#transfer-to").selectOption(await target.getAttribute("value"));
  await anna.locator("#transfer").click();
  const offer = boris.locator(`#offers li[data-dialog-id="${seen.dialogId}"]`);
  await offer.waitFor(WAIT);
  await offer.locator("button.take").click();
  await boris.locator("#messages li.visitor").filter({ hasText: "parcel" }).waitFor(WAIT);
  await anna.locator(`#chats li[data-dialog-id="${seen.dialogId}"]`).waitFor({ state: "detached", ...WAIT });
  await boris.locator("#text").fill("Hi, Boris here: your parcel arrives tomorrow.");
  await boris.locator("#text").press("Enter");
  await w("li.operator").filter({ hasText: "Boris here" }).waitFor(WAIT);

  // Transcript, then close: the visitor sees the conversation end.
  await boris.locator("#transcript").click();
  seen.transcript = await boris.locator("#transcript-text").filter({ hasText: "Bot: I got" }).textContent(WAIT);
  await shot(boris, "05-console-transcript");
  await boris.locator("#transcript-done").click();
  await boris.locator("#close").click();
  seen.ended = await w("#status").filter({ hasText: "ended" }).textContent(WAIT);
  await shot(visitor, "06-widget-closed");

  // Boris turns alerts on: a new queue item rings and notifies from now on.
  await boris.locator("#alerts").check();
  // A new conversation: the bot does not answer this one; nobody is online: the offline form.
  for (const page of [anna, boris]) {
    await page.locator("#presence").selectOption("offline");
    await page.locator("#connection.offline").waitFor(WAIT);
  }
  await w("#restart").click();
  await w("#input").fill("Is anyone there?");
  await w("#input").press("Enter");
  seen.noBot = await w("li.system").filter({ hasText: "not answering" }).textContent(WAIT);
  // the bot hands over on "person"; nobody is online: the widget offers the form, not a place in line
  await w("#input").fill("I want a person");
  await w("#input").press("Enter");
  await w("#offline").waitFor(WAIT);
  seen.offlineIntro = await w("#offline-intro").textContent();
  await w("#offline-name").fill("Ann Example");
  await w("#offline-contact").fill("ann@example.com");
  await w("#offline-text").fill("Please call me about the refund.");
  await shot(visitor, "07-widget-offline-form");
  await w("#offline button[type=submit]").click();
  seen.offlineThanks = await w("li.system").filter({ hasText: "ann@example.com" }).textContent(WAIT);

  // Boris comes back online: the left message waits in the queue with the contact's name.
  await boris.locator("#presence").selectOption("online");
  seen.offlineItem = await boris.locator("#queue li").filter({ hasText: "Ann Example" }).textContent(WAIT);
  await boris.waitForFunction(() => window.__notified.includes("A visitor left a message"), null, WAIT);
  seen.notified = await boris.evaluate(() => window.__notified);

  // Logging out: the login form only, the badge not green; Boris sees Anna offline.
  await anna.locator("#logout").click();
  await anna.locator("#login").waitFor(WAIT);
  check(!(await visible(anna, "#console-view")), "console hidden after logout");
  check(!(await visible(anna, "#me")), "header controls hidden after logout");
  seen.badgeAfterLogout = await anna.locator("#connection").getAttribute("class");
  await boris.locator("#operators li").filter({ hasText: config.anna.name }).filter({ hasText: "offline" })
    .waitFor(WAIT);

  // Accessibility of both pages (console logged in with a chat open; widget open).
  await axe(boris, "console");
  await axe(visitor, "widget");

  // Phone width: the widget fills the screen, the console stacks.
  await visitor.setViewportSize({ width: 390, height: 844 });
  const panel = await w("#panel").boundingBox();
  seen.phonePanel = [Math.round(panel.width), Math.round(panel.height)];
  await shot(visitor, "08-widget-phone");
  await boris.setViewportSize({ width: 390, height: 844 });
  await shot(boris, "09-console-phone");
  await axe(boris, "console_phone");
  console.log(JSON.stringify({ ...seen, logs }));
} catch (err) {
  for (const [name, page] of pages) await shot(page, `failed-${name}`).catch(() => {});
  console.error(String(err && err.stack || err), "\n", logs.join("\n"));
  process.exitCode = 1;
} finally {
  await chrome.close();
  clearTimeout(timer);
}
