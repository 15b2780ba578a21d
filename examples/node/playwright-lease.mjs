#!/usr/bin/env node
// A Playwright job on a leased browser session: lease a logged-in session of a site from the
// authkeeper broker, open a page with its cookies, localStorage, proxy and identity, and release
// it with the browser's new state (or as `logged_out` when the site sent us to its login page).
//
//   npm install authkeeper playwright-core
//   AUTHKEEPER_URL=... AUTHKEEPER_API_KEY=... node playwright-lease.mjs portal https://portal.example.com/reports [account]
//
// Uses the system Chromium (AUTHKEEPER_CHROMIUM, default /usr/bin/chromium).
import { chromium } from "playwright-core";
import { LoggedOut, withLease } from "authkeeper";

const [site, url, account] = process.argv.slice(2);
if (!site || !url) {
  console.error("usage: playwright-lease.mjs SITE URL [ACCOUNT]");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.AUTHKEEPER_CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  let session;
  const title = await withLease(site, async (lease) => {
    session = lease;
    const context = await lease.newContext(browser); // state, proxy and identity of the session
    const page = await context.newPage();
    await page.goto(url);
    if (page.url().includes("/login")) throw new LoggedOut(`${site}: sent to the login page`);
    const body = (await page.innerText("body")).slice(0, 200);
    console.log(`session ${lease.sessionId}: ${JSON.stringify(await page.title())}: ${JSON.stringify(body)}`);
    return page.title();
  }, { account, ttl: 120 });
  const summary = session.summary;
  console.log(`released ${summary.session_id}: ${summary.state}, ${summary.usage_count} uses (${title})`);
} catch (error) {
  if (!(error instanceof LoggedOut)) throw error;
  console.log(`logged out, session released for a new login: ${error.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
