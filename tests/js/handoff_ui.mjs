// The widget (on a website) and the operator console driven in headless Chromium.
// Usage: node handoff_ui.mjs HUB_URL VISITOR_PAGE_URL EMAIL PASSWORD COLLEAGUE_EMAIL [CHROMIUM]
// VISITOR_PAGE_URL is a page embedding the widget (e.g. the demo page, or another site);
// EMAIL and COLLEAGUE_EMAIL are two operators with the same PASSWORD.
// Prints one JSON object with what each side saw. Playwright's launch() gives the
// browser a fresh temporary profile (--user-data-dir) of its own each run.
import { launch } from "./browser.mjs";

const [url, visitorPage, email, password, colleagueEmail, executable] = process.argv.slice(2);
const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 90000);
const WAIT = { timeout: 20000 };

const chrome = await launch(executable);
const browser = chrome.browser;
const logs = [];
try {
  // two separate browser profiles: a website visitor and an operator
  const visitor = await (await browser.newContext()).newPage();
  const operator = await (await browser.newContext()).newPage();
  const colleague = await (await browser.newContext()).newPage();
  for (const [name, page] of [["visitor", visitor], ["operator", operator], ["colleague", colleague]]) {
    page.on("pageerror", (err) => logs.push(`${name} page error: ${err.message}`));
    page.on("console", (msg) => { if (msg.type() === "error") logs.push(`${name} console: ${msg.text()}`); });
  }

  // the visitor opens the widget on a website and talks to the bot
  await visitor.goto(visitorPage);
  await visitor.locator("#hub-widget #toggle").click();
  await visitor.locator("#hub-widget #status").filter({ hasText: "assistant" }).waitFor(WAIT);
  await visitor.locator("#hub-widget #input").fill("Hello bot, where is my parcel?");
  await visitor.locator("#hub-widget #input").press("Enter");
  const botReply = await visitor.locator("#hub-widget li.assistant").first().textContent(WAIT);

  // ... then asks for a human and sees their place in line
  await visitor.locator("#hub-widget #human").click();
  const waiting = await visitor.locator("#hub-widget #status").filter({ hasText: "#1 in line" }).textContent(WAIT);

  // two operators log in to the console and see the dialog in the queue
  for (const [page, who] of [[operator, email], [colleague, colleagueEmail]]) {
    await page.goto(`${url}/console`);
    await page.locator("#email").fill(who);
    await page.locator("#password").fill(password);
    await page.locator("#login button[type=submit]").click();
  }
  const item = operator.locator("#queue li[data-dialog-id]").first();
  await item.waitFor(WAIT);
  const dialogId = Number(await item.getAttribute("data-dialog-id"));
  const theirs = colleague.locator(`#queue li[data-dialog-id="${dialogId}"]`);
  await theirs.waitFor(WAIT);
  // one accepts; the dialog leaves the other's queue live
  await item.locator("button.accept").click();
  await theirs.waitFor({ state: "detached", ...WAIT });
  const colleagueQueue = await colleague.locator("#queue li").count();
  await operator.locator("#messages li.visitor").filter({ hasText: "where is my parcel" }).waitFor(WAIT);
  const joined = await visitor.locator("#hub-widget #status").filter({ hasText: "operator has joined" })
    .textContent(WAIT);

  // both see each other's messages live
  await operator.locator("#text").fill("Hi, I am Anna from support.");
  await operator.locator("#send button").click();
  const seenByVisitor = await visitor.locator("#hub-widget li.operator").filter({ hasText: "Anna" })
    .textContent(WAIT);
  // typed key by key for over 1.5 s: the widget repeats "typing" meanwhile, so the operator sees it
  await visitor.locator("#hub-widget #input").pressSequentially("Thank you, Anna!", { delay: 120 });
  const typing = await operator.locator("#typing").filter({ hasText: "typing" }).textContent(WAIT);
  await visitor.locator("#hub-widget #send").click();
  const seenByOperator = await operator.locator("#messages li.visitor").filter({ hasText: "Thank you, Anna" })
    .textContent(WAIT);

  // the operator gives the dialog back to the bot
  await operator.locator("#release").click();
  const released = await visitor.locator("#hub-widget #status").filter({ hasText: "back with our assistant" })
    .textContent(WAIT);
  const presence = await operator.locator("#presence").inputValue();

  // logging out takes the operator offline at once, as the colleague's console shows
  await operator.locator("#logout").click();
  await operator.locator("#login").waitFor(WAIT);
  const loggedOut = await colleague.locator("#operators li").filter({ hasText: "offline" }).first()
    .textContent(WAIT);
  console.log(JSON.stringify({ dialogId, botReply, waiting, joined, seenByVisitor, seenByOperator, released,
                               presence, typing, colleagueQueue, loggedOut, logs }));
} catch (err) {
  console.error(String(err && err.stack || err), "\n", logs.join("\n"));
  process.exitCode = 1;
} finally {
  await chrome.close();
  clearTimeout(timer);
}
