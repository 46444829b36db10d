// Streamed bot replies in headless Chromium: the widget (on another website) and the
// operator console show the bot's reply growing delta by delta, then the stored
// message in its place; the widget reloaded mid-stream shows the text so far, then the
// rest. Usage: node streams_ui.mjs CONFIG_JSON, CONFIG = {hubA, hubB, shop, operator,
// password, story, again, chromium}. Prints one JSON object with what each side saw.
import { launch } from "./browser.mjs";

const config = JSON.parse(process.argv[2]);
const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 110000);
const WAIT = { timeout: 20000 };
const chrome = await launch(config.chromium);
const logs = [];
const seen = {};
const words = (text) => text.trim().split(/\s+/);
// The text of a message line (its label and time are elements before it).
const body = (locator) => locator.evaluate((li) => li.lastChild.textContent);

try {
  const visitor = await (await chrome.browser.newContext()).newPage();
  const anna = await (await chrome.browser.newContext()).newPage();
  for (const [name, page] of [["visitor", visitor], ["anna", anna]]) {
    page.on("pageerror", (err) => logs.push(`${name} page error: ${err.message}`));
    page.on("console", (msg) => { if (msg.type() === "error") logs.push(`${name} console: ${msg.text()}`); });
  }
  const w = (selector) => visitor.locator(`#hub-widget ${selector}`);
  // Anna is online on the other instance first, so that the visitor's handoff waits for her.
  await anna.goto(`${config.hubB}/console`);
  await anna.locator("#email").fill(config.operator);
  await anna.locator("#password").fill(config.password);
  await anna.locator("#login button[type=submit]").click();
  await anna.locator("#connection.online").waitFor(WAIT);
  await visitor.goto(config.shop);
  await w("#toggle").click();
  await w("#status").filter({ hasText: "assistant" }).waitFor(WAIT);
  await w("#input").fill("I want a person");
  await w("#input").press("Enter");
  await w("#status").filter({ hasText: "in line" }).waitFor(WAIT);

  // Anna accepts, then gives the dialog back to the bot.
  await anna.locator("#queue li[data-dialog-id] button.accept").first().click();
  const dialogId = Number(await anna.locator("#chats li[data-dialog-id]").first().getAttribute("data-dialog-id"));
  await anna.locator("#release").click();
  await w("#status").filter({ hasText: "back with our assistant" }).waitFor(WAIT);
  // She keeps watching it: the console reopens the dialog it had open after a reload.
  await anna.evaluate((id) => sessionStorage.setItem("hub.console.current", JSON.stringify(id)), dialogId);
  await anna.reload();
  await anna.locator("#messages li.visitor").filter({ hasText: "I want a person" }).waitFor(WAIT);

  // The bot streams its answer: both pages show it growing, then the stored message.
  await w("#input").fill("Tell me a story");
  await w("#input").press("Enter");
  const growing = w("#messages li.streaming");
  await growing.filter({ hasText: "w3 " }).waitFor(WAIT);
  seen.widgetPartial = await body(growing);
  const console_ = anna.locator("#messages li.streaming");
  await console_.filter({ hasText: "w5 " }).waitFor(WAIT);
  seen.consolePartial = await body(console_);
  const last = words(config.story).at(-1);
  const done = w("#messages li.assistant:not(.streaming)").filter({ hasText: last });
  await done.waitFor(WAIT);
  seen.widgetFinal = await body(done);
  const doneConsole = anna.locator("#messages li.assistant:not(.streaming)").filter({ hasText: last });
  await doneConsole.waitFor(WAIT);
  seen.consoleFinal = await body(doneConsole);
  seen.streamingLeft = await w("#messages li.streaming").count() + await anna.locator("#messages li.streaming").count();

  // A reload mid-stream: the text so far at once, then the rest, nothing twice.
  await w("#input").fill("Again, please");
  await w("#input").press("Enter");
  await w("#messages li.streaming").filter({ hasText: "x4 " }).waitFor(WAIT);
  await visitor.reload();
  if (await w("#panel").isHidden()) await w("#toggle").click();
  const resumed = w("#messages li.streaming");
  await resumed.waitFor(WAIT);
  seen.afterReload = await body(resumed);
  const lastAgain = words(config.again).at(-1);
  const doneAgain = w("#messages li.assistant:not(.streaming)").filter({ hasText: lastAgain });
  await doneAgain.waitFor(WAIT);
  seen.reloadedFinal = await body(doneAgain);
  seen.widgetLines = await w("#messages li.assistant").count();
} finally {
  clearTimeout(timer);
  await chrome.close();
}
seen.logs = logs;
console.log(JSON.stringify(seen));
