// Load a page in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core),
// wait until the rtsup demo shows "connected" and a worker, save a screenshot.
//   node browser.js URL SCREENSHOT.png
// Prints one JSON line: {status, worker, transport, screenshot}.
const { launch } = require("./chromium");

async function main() {
  const [url, shot] = process.argv.slice(2);
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 640 } });
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById("status").textContent === "connected"
      && document.getElementById("worker").textContent.startsWith("slot"), null, { timeout: 20000 });
    await page.fill("#text", "hello from chromium");
    await page.click("button");
    await page.waitForFunction(() => document.getElementById("log").textContent.includes("hello from chromium"), null, { timeout: 10000 });
    const out = await page.evaluate(() => ({
      status: document.getElementById("status").textContent,
      worker: document.getElementById("worker").textContent,
      transport: document.getElementById("transport").textContent,
      log: document.getElementById("log").textContent,
    }));
    await page.screenshot({ path: shot, fullPage: true });
    console.log(JSON.stringify({ ...out, screenshot: shot }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.log(JSON.stringify({ error: String(e) }));
  process.exit(1);
});
