// check.mjs BASE_URL STATE_FILE
//
// Opens BASE_URL/home in a fresh Chromium context restored from a Playwright storageState file
// and prints {"url", "status", "welcome", "api_token"} as one JSON line: welcome is the text of
// #welcome or null, api_token the localStorage item or null.
// Exit: 0 logged in (#welcome on /home); 3 not logged in (redirected to /login, blocked, ...);
// 1 the check itself failed; 2 usage.
import { launch, argv, trimBase, TIMEOUT_MS } from './browser.mjs';

const [rawBase, stateFile] = argv(2, 'node check.mjs BASE_URL STATE_FILE');
const base = trimBase(rawBase);

let status = 1;
const browser = await launch();
try {
  const context = await browser.newContext({ storageState: stateFile });
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  const response = await page.goto(`${base}/home`);
  await page.waitForLoadState('load');
  const welcomeLocator = page.locator('#welcome');
  const welcome = (await welcomeLocator.count()) ? (await welcomeLocator.innerText()).trim() : null;
  const apiToken = await page.evaluate(() => localStorage.getItem('api_token'));
  const url = page.url();
  const loggedIn = welcome !== null && new URL(url).pathname === '/home';
  console.log(JSON.stringify({ url, status: response?.status() ?? null, welcome, api_token: apiToken }));
  status = loggedIn ? 0 : 3;
} catch (error) {
  console.error(`check.mjs: ${error?.message ?? error}`);
  status = 1;
} finally {
  await browser.close();
}
process.exit(status);
