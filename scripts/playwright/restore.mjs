// restore.mjs URL STATE_FILE
//
// Opens URL in a fresh Chromium context restored from a storage state (a lease's
// `storage_state`): cookies, localStorage and IndexedDB by Playwright itself, sessionStorage by
// an init script (Playwright's storageState has none), as authkeeper's clients do. Prints what
// the page sees: {"local": {...}, "session": {...}, "idb": {"DB/STORE": [[key, value]...]}}.
// Exit: 0 printed; 1 failed; 2 usage.
import { readFileSync } from 'node:fs';
import { launch, argv, TIMEOUT_MS } from './browser.mjs';

const [url, stateFile] = argv(2, 'node restore.mjs URL STATE_FILE');
const state = JSON.parse(readFileSync(stateFile, 'utf8'));

let status = 1;
const browser = await launch();
try {
  const context = await browser.newContext({ storageState: state });
  const session = Object.fromEntries(
    (state.origins ?? [])
      .filter((o) => (o.sessionStorage ?? []).length > 0)
      .map((o) => [o.origin, o.sessionStorage.map((e) => [e.name, e.value])]),
  );
  await context.addInitScript((byOrigin) => {
    const entries = byOrigin[location.origin];
    if (!entries || sessionStorage.getItem('__authkeeper_restored')) return;
    for (const [k, v] of entries) sessionStorage.setItem(k, v);
    sessionStorage.setItem('__authkeeper_restored', '1');
  }, session);
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  await page.goto(url);
  const seen = await page.evaluate(async () => {
    const plain = (storage) => Object.fromEntries(Object.entries(storage).filter(([k]) => !k.startsWith('__authkeeper')));
    const idb = {};
    for (const info of await indexedDB.databases()) {
      const db = await new Promise((resolve, reject) => {
        const open = indexedDB.open(info.name);
        open.onsuccess = () => resolve(open.result);
        open.onerror = () => reject(open.error);
      });
      for (const name of db.objectStoreNames) {
        const store = db.transaction(name, 'readonly').objectStore(name);
        idb[`${db.name}/${name}`] = await new Promise((resolve, reject) => {
          const rows = [];
          const cursor = store.openCursor();
          cursor.onsuccess = () => {
            const at = cursor.result;
            if (!at) return resolve(rows);
            rows.push([at.key, at.value]);
            at.continue();
          };
          cursor.onerror = () => reject(cursor.error);
        });
      }
      db.close();
    }
    return { local: plain(localStorage), session: plain(sessionStorage), idb };
  });
  console.log(JSON.stringify(seen));
  status = 0;
} catch (error) {
  console.error(`restore.mjs: ${error?.message ?? error}`);
  status = 1;
} finally {
  await browser.close();
}
process.exit(status);
