// Writes web storage into this origin: the argument is {"local": [[k, v]...], "session": [[k, v]...],
// "idb": [Playwright's `indexedDB` format]} (records with a `valueEncoded` are left to
// Playwright, which restores them itself).
(async (state) => {
  for (const [k, v] of state.local) localStorage.setItem(k, v);
  for (const [k, v] of state.session) sessionStorage.setItem(k, v);
  for (const database of state.idb) {
    await new Promise((resolve, reject) => {
      const open = indexedDB.open(database.name, database.version);
      open.onupgradeneeded = () => {
        const db = open.result;
        for (const s of database.stores) {
          if (db.objectStoreNames.contains(s.name)) continue;
          const store = db.createObjectStore(s.name, {
            autoIncrement: s.autoIncrement,
            keyPath: s.keyPathArray ?? s.keyPath ?? null,
          });
          for (const i of s.indexes ?? []) {
            store.createIndex(i.name, i.keyPathArray ?? i.keyPath, { unique: i.unique, multiEntry: i.multiEntry });
          }
        }
      };
      open.onsuccess = () => {
        const db = open.result;
        const names = database.stores.map((s) => s.name);
        if (names.length === 0) { db.close(); resolve(); return; }
        const tx = db.transaction(names, 'readwrite');
        for (const s of database.stores) {
          const store = tx.objectStore(s.name);
          for (const record of s.records ?? []) {
            if (!('value' in record)) continue;
            if ('key' in record) store.put(record.value, record.key); else store.put(record.value);
          }
        }
        tx.oncomplete = () => { db.close(); resolve(); };
        tx.onerror = () => reject(tx.error);
      };
      open.onerror = () => reject(open.error);
    });
  }
  return true;
})(__AUTHKEEPER_STATE__)
