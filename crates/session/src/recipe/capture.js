// Reads this origin's web storage as JSON text: {"local": [[k, v]...], "session": [[k, v]...],
// "idb": [Playwright's `indexedDB` format]}. IndexedDB values are copied as JSON (a Date becomes
// its ISO string; binary values are left out).
(async () => {
  const local = Object.entries(localStorage);
  const session = Object.entries(sessionStorage);
  const idb = [];
  const request = (r) => new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  const infos = indexedDB.databases ? await indexedDB.databases() : [];
  for (const info of infos) {
    if (!info.name) continue;
    const open = indexedDB.open(info.name);
    open.onupgradeneeded = () => open.transaction.abort();
    const db = await request(open);
    const stores = [];
    for (const name of db.objectStoreNames) {
      const store = db.transaction(name, 'readonly').objectStore(name);
      const entry = { name, autoIncrement: store.autoIncrement };
      if (Array.isArray(store.keyPath)) entry.keyPathArray = store.keyPath;
      else if (store.keyPath !== null) entry.keyPath = store.keyPath;
      const records = [];
      await new Promise((resolve, reject) => {
        const cursor = store.openCursor();
        cursor.onsuccess = () => {
          const at = cursor.result;
          if (!at) return resolve();
          const record = {};
          if (store.keyPath === null) record.key = at.key;
          record.value = JSON.parse(JSON.stringify(at.value) ?? 'null');
          records.push(record);
          at.continue();
        };
        cursor.onerror = () => reject(cursor.error);
      });
      entry.records = records;
      entry.indexes = [...store.indexNames].map((indexName) => {
        const index = store.index(indexName);
        const described = { name: indexName };
        if (Array.isArray(index.keyPath)) described.keyPathArray = index.keyPath;
        else described.keyPath = index.keyPath;
        described.multiEntry = index.multiEntry;
        described.unique = index.unique;
        return described;
      });
      stores.push(entry);
    }
    idb.push({ name: db.name, version: db.version, stores });
    db.close();
  }
  return JSON.stringify({ local, session, idb });
})()
