// login.mjs BASE_URL USERNAME PASSWORD OUT_FILE
//
// Signs into the authkeeper mock login app (crates/mock, `LoginApp`) through its HTML form with
// a real Chromium, waits for /home and #welcome (and the api_token the page puts in
// localStorage), and writes Playwright's storageState JSON to OUT_FILE.
// Exit: 0 logged in and written; 1 anything else failed; 2 usage; 4 the form said the
// credentials are wrong. Never prints the password or cookie values.
import { launch, argv, trimBase, TIMEOUT_MS } from './browser.mjs';

const [rawBase, username, password, outFile] = argv(4, 'node login.mjs BASE_URL USERNAME PASSWORD OUT_FILE');
const base = trimBase(rawBase);

let status = 1;
const browser = await launch();
try {
  const context = await browser.newContext();
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  await page.goto(`${base}/login?next=/home`);
  await page.fill('#username', username);
  await page.fill('#password', password);
  await Promise.all([page.waitForNavigation(), page.click('#submit')]);
  if (await page.locator('#error').count()) {
    console.error(`login.mjs: ${(await page.locator('#error').innerText()).trim()}`);
    status = 4;
  } else {
    await page.waitForURL((url) => url.pathname === '/home');
    await page.waitForSelector('#welcome');
    // The inline script stores the API token; wait until it has run.
    await page.waitForFunction(() => localStorage.getItem('api_token') && document.getElementById('token')?.textContent);
    await context.storageState({ path: outFile });
    console.log(JSON.stringify({ url: page.url(), welcome: (await page.locator('#welcome').innerText()).trim(), state_file: outFile }));
    status = 0;
  }
} catch (error) {
  console.error(`login.mjs: ${error?.message ?? error}`);
  status = 1;
} finally {
  await browser.close();
}
process.exit(status);
