// Load the rtsup admin dashboard in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core), wait until it lists the expected number of ready workers, save a screenshot.
//   node dashboard.js URL READY_COUNT SCREENSHOT.png
// Prints one JSON line: {rows, ready, cards, screenshot}.
const { launch } = require("./chromium");

async function main() {
  const [url, want, shot] = process.argv.slice(2);
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 760 } });
    await page.goto(url);
    await page.waitForFunction((n) => [...document.querySelectorAll("#workers tr")]
      .filter((tr) => tr.textContent.includes("ready")).length >= Number(n), want, { timeout: 20000 });
    // Let the memory chart gather a few samples.
    await page.waitForTimeout(2500);
    const out = await page.evaluate(() => ({
      rows: document.querySelectorAll("#workers tr").length,
      ready: document.getElementById("ready").textContent,
      sessions: document.getElementById("sessions").textContent,
      lines: document.querySelectorAll("#mem polyline").length,
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
