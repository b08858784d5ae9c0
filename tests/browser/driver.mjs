// Drives Debian's headless Chromium (/usr/bin/chromium, never a downloaded browser build) through
// playwright-core for the python browser tests: one JSON command per stdin line, one JSON answer per stdout
// line ({"ok": true, ...} or {"ok": false, "error": "..."}). Commands:
//   {"op": "open", "url": U}                        load the test page, wait until it subscribed or failed
//   {"op": "messages", "count": N}                  wait until the page lists N messages, return them
//   {"op": "publish", "topic": T, "payload": P, "qos": Q}   publish from the page, wait for its completion
//   {"op": "screenshot", "path": F}                 save a PNG of the page
//   {"op": "goto", "url": U}                        load any page (the broker's dashboard), wait for its load event
//   {"op": "wait", "expression": E}                 wait until the JS expression E is truthy in the page
//   {"op": "eval", "expression": E}                 evaluate E in the page, return its value as "value"
//   {"op": "quit"}
// Argument: --user-data-dir DIR, a fresh profile made by the caller. Certificates are checked as usual: the
// caller trusts the test CA through the NSS database in $HOME/.pki/nssdb (Chromium's store on Linux), so
// no --ignore-certificate-errors is needed and a wrong certificate still fails.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const COMMAND_TIMEOUT_MS = 15000;
const argv = process.argv.slice(2);
const userDataDir = argv[argv.indexOf("--user-data-dir") + 1];

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.SHARDMQ_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  timeout: 60000, // a cold Chromium start on a loaded 2-core machine takes seconds
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
context.setDefaultTimeout(COMMAND_TIMEOUT_MS);
let page = null;
const consoleLines = [];

const handlers = {
  async open({ url }) {
    // A fresh page per open: the previous page's MQTT connection goes with it.
    if (page) await page.close();
    consoleLines.length = 0;
    page = await context.newPage();
    page.on("console", (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
    page.on("pageerror", (error) => consoleLines.push(`pageerror: ${error.message}`));
    await page.goto(url);
    await page.waitForFunction(() => window.testState && window.testState.state !== "connecting");
    const state = await page.evaluate(() => window.testState);
    return { state: state.state, error: state.error, granted: state.granted, console: consoleLines };
  },
  async messages({ count }) {
    await page.waitForFunction((n) => document.querySelectorAll("#messages li").length >= n, count);
    const shown = await page.$$eval("#messages li", (items) => items.map((item) => item.textContent));
    return { messages: shown };
  },
  async publish({ topic, payload, qos }) {
    await page.evaluate(([t, p, q]) => window.publishFromPage(t, p, q), [topic, payload, qos]);
    return {};
  },
  async goto({ url }) {
    if (page) await page.close();
    consoleLines.length = 0;
    page = await context.newPage();
    page.on("console", (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
    page.on("pageerror", (error) => consoleLines.push(`pageerror: ${error.message}`));
    await page.goto(url);
    return { console: consoleLines };
  },
  async wait({ expression }) {
    await page.waitForFunction(expression);
    return {};
  },
  async eval({ expression }) {
    return { value: await page.evaluate(expression) };
  },
  async screenshot({ path }) {
    await page.screenshot({ path, fullPage: true });
    return { path };
  },
};

const answer = (object) => process.stdout.write(JSON.stringify(object) + "\n");
answer({ ok: true, ready: true });
for await (const line of createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  if (command.op === "quit") break;
  try {
    answer({ ok: true, ...(await handlers[command.op](command)) });
  } catch (error) {
    answer({ ok: false, error: String(error && error.message ? error.message : error), console: consoleLines });
  }
}
await context.close();
