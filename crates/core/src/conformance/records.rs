//! The conformance checks of [`RecordStore`]: versioned compare-and-put, listing by part,
//! removal, and independence of kinds and of credentials.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::{SharedStore, T0, ok, sample_tokens};
use crate::name::{CredentialName, SessionId, SiteName, TaskName};
use crate::store::{CredentialStore, Expect, Precondition, Record, RecordKey, RecordKind};

/// The record kind the checks write.
pub const KIND: RecordKind = RecordKind::new("conformance");
/// A second kind, to check that kinds are independent namespaces.
pub const OTHER_KIND: RecordKind = RecordKind::new("conformance-other");

/// A one-segment key.
fn key(part: &str) -> RecordKey {
    RecordKey::new(&TaskName::new(part).unwrap_or_else(|e| panic!("{e}")))
}

/// A two-segment key.
fn key2(part: &str, item: &str) -> RecordKey {
    RecordKey::with_item(
        &SiteName::new(part).unwrap_or_else(|e| panic!("{e}")),
        &SessionId::new(item).unwrap_or_else(|e| panic!("{e}")),
    )
}

/// A document like the ones `authkeeper-session` stores: a JSON object with a counter and a
/// secret-looking cookie value.
pub fn document(counter: u64, tag: &str) -> Vec<u8> {
    json!({
        "counter": counter,
        "storage_state": {
            "cookies": [{
                "name": "sid",
                "value": format!("cookie-{tag}-secret"),
                "domain": ".example.com",
                "path": "/",
                "expires": -1,
                "httpOnly": true,
                "secure": true,
                "sameSite": "Lax"
            }],
            "origins": []
        }
    })
    .to_string()
    .into_bytes()
}

fn counter(record: &Record) -> u64 {
    let document: Value = serde_json::from_slice(&record.data).unwrap_or_else(|e| {
        panic!(
            "record {} does not hold the JSON that was written: {e}",
            record.key
        )
    });
    document
        .get("counter")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("record {} lost its counter", record.key))
}

async fn get_or_panic(store: &SharedStore, kind: RecordKind, key: &RecordKey) -> Record {
    ok(store.get(kind, key).await, "get").unwrap_or_else(|| panic!("record {key} is missing"))
}

async fn put(
    store: &SharedStore,
    kind: RecordKind,
    key: &RecordKey,
    expect: Expect,
    data: &[u8],
) -> Option<u64> {
    ok(
        store.compare_and_put(kind, key, expect, data, T0).await,
        "compare_and_put",
    )
}

/// A write with [`Expect::Any`] replaces whatever is there and bumps the version, with the
/// write time kept; the document round-trips, `Debug` never shows it, and removal works once.
pub async fn records_round_trip_with_any_expectation(store: SharedStore) {
    let job = key("job");
    assert!(
        ok(store.get(KIND, &job).await, "get").is_none(),
        "a record nobody wrote was found"
    );
    let first = br#"{"done":75,"cursor":"p-75"}"#;
    let v1 = ok(
        store
            .compare_and_put(KIND, &job, Expect::Any, first, T0)
            .await,
        "compare_and_put",
    )
    .unwrap_or_else(|| panic!("a write with Expect::Any was refused"));
    let saved = get_or_panic(&store, KIND, &job).await;
    assert_eq!(saved.key, job);
    assert_eq!(&saved.data[..], &first[..]);
    assert_eq!(saved.version, v1);
    assert_eq!(saved.updated_at, T0);
    assert!(
        !format!("{saved:?}").contains("p-75"),
        "Debug of a record shows its document"
    );
    let later = T0 + Duration::from_secs(5);
    let v2 = ok(
        store
            .compare_and_put(KIND, &job, Expect::Any, br#"{"done":80}"#, later)
            .await,
        "compare_and_put",
    )
    .unwrap_or_else(|| panic!("a write with Expect::Any was refused"));
    assert!(v2 > v1, "the version did not move: {v1} then {v2}");
    let saved = get_or_panic(&store, KIND, &job).await;
    assert_eq!(&saved.data[..], br#"{"done":80}"#);
    assert_eq!(saved.updated_at, later);
    assert!(ok(store.remove(KIND, &job, Expect::Any).await, "remove"));
    assert!(
        !ok(store.remove(KIND, &job, Expect::Any).await, "remove"),
        "removing a missing record reported a removal"
    );
    assert!(ok(store.get(KIND, &job).await, "get").is_none());
}

/// Created with [`Expect::Absent`] as version 1; every write over the stored version bumps it;
/// a write over any other version (or `Absent` on an existing record) is refused with `None` and
/// changes nothing.
pub async fn records_compare_and_put_checks_version(store: SharedStore) {
    let s1 = key2("shop", "s1");
    let first = document(1, "first");
    assert_eq!(
        put(&store, KIND, &s1, Expect::Absent, &first).await,
        Some(1),
        "creating a record must give version 1"
    );
    let loaded = get_or_panic(&store, KIND, &s1).await;
    assert_eq!(
        (loaded.key.to_string(), loaded.version),
        ("shop/s1".into(), 1)
    );
    assert_eq!(
        &loaded.data[..],
        &first[..],
        "the document did not round-trip"
    );
    assert!(
        !format!("{loaded:?}").contains("cookie-first-secret"),
        "Debug of a record shows its document"
    );

    let second = document(2, "second");
    assert_eq!(
        put(&store, KIND, &s1, Expect::Version(1), &second).await,
        Some(2),
        "a write over the stored version must bump it"
    );
    for (expect, what) in [
        (Expect::Version(1), "a stale version"),
        (Expect::Version(7), "a future version"),
        (Expect::Version(0), "version 0"),
        (Expect::Absent, "Absent"),
    ] {
        assert_eq!(
            put(&store, KIND, &s1, expect, &document(99, "lost")).await,
            None,
            "a write over {what} (stored: 2) was accepted"
        );
        let loaded = get_or_panic(&store, KIND, &s1).await;
        assert_eq!(loaded.version, 2, "a refused write moved the version");
        assert_eq!(
            &loaded.data[..],
            &second[..],
            "a refused write changed the document"
        );
    }
    let ghost = key2("shop", "ghost");
    assert_eq!(
        put(&store, KIND, &ghost, Expect::Version(3), b"{}").await,
        None,
        "a write over version 3 of a missing record was accepted"
    );
    assert!(
        ok(store.get(KIND, &ghost).await, "get").is_none(),
        "a refused write created a record"
    );
    // An empty document is a document.
    let empty = key2("shop", "empty");
    assert_eq!(
        put(&store, KIND, &empty, Expect::Absent, b"").await,
        Some(1)
    );
    assert!(get_or_panic(&store, KIND, &empty).await.data.is_empty());
}

/// Twenty tasks each read a record, increment the counter in its JSON and compare-and-put it,
/// retrying until their write lands: the counter ends at 20 (no lost update) and the version
/// moved once per successful write.
pub async fn records_concurrent_updates_lose_nothing(store: SharedStore) {
    const TASKS: u64 = 20;
    let shared = key2("race", "shared");
    assert_eq!(
        put(&store, KIND, &shared, Expect::Absent, &document(0, "race")).await,
        Some(1)
    );
    let conflicts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let conflicts = Arc::clone(&conflicts);
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut attempts = 0u32;
            loop {
                attempts += 1;
                assert!(attempts < 10_000, "task {task} never got its write in");
                let current = get_or_panic(&store, KIND, &shared).await;
                let next = document(counter(&current) + 1, "race");
                match put(
                    &store,
                    KIND,
                    &shared,
                    Expect::Version(current.version),
                    &next,
                )
                .await
                {
                    Some(version) => {
                        assert_eq!(
                            version,
                            current.version + 1,
                            "a successful write must bump the version by one"
                        );
                        return;
                    }
                    None => {
                        conflicts.fetch_add(1, Ordering::Relaxed);
                        tokio::task::yield_now().await;
                    }
                }
            }
        }));
    }
    for task in tasks {
        if let Err(err) = task.await {
            std::panic::resume_unwind(err.into_panic());
        }
    }
    let last = get_or_panic(&store, KIND, &shared).await;
    assert_eq!(
        counter(&last),
        TASKS,
        "lost updates: {} increments landed out of {TASKS} ({} conflicts retried)",
        counter(&last),
        conflicts.load(Ordering::Relaxed)
    );
    assert_eq!(last.version, TASKS + 1);
}

/// `list_children` gives exactly the records under one part, unsealed; `parts` the parts that
/// have records. A part is its own namespace: the same item in two parts are two records, and a
/// record is never found under another part. A part whose last record is removed is no longer
/// listed.
pub async fn records_are_listed_per_part(store: SharedStore) {
    assert!(ok(store.parts(KIND).await, "parts").is_empty());
    assert!(ok(store.list_children(KIND, &key("a")).await, "list_children").is_empty());
    for (part, item) in [("a", "one"), ("a", "two"), ("b", "one")] {
        let data = document(0, &format!("{part}-{item}"));
        assert_eq!(
            put(&store, KIND, &key2(part, item), Expect::Absent, &data).await,
            Some(1)
        );
    }
    assert_eq!(
        put(
            &store,
            KIND,
            &key2("a", "two"),
            Expect::Version(1),
            &document(1, "a-two")
        )
        .await,
        Some(2)
    );
    let mut listed = ok(store.list_children(KIND, &key("a")).await, "list_children");
    listed.sort_by(|x, y| x.key.cmp(&y.key));
    let seen: Vec<(String, u64)> = listed
        .iter()
        .map(|r| (r.key.to_string(), r.version))
        .collect();
    assert_eq!(seen, [("a/one".to_owned(), 1), ("a/two".to_owned(), 2)]);
    assert_eq!(&listed[0].data[..], &document(0, "a-one")[..]);
    assert_eq!(&listed[1].data[..], &document(1, "a-two")[..]);
    let listed = ok(store.list_children(KIND, &key("b")).await, "list_children");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key.to_string(), "b/one");
    assert_eq!(&listed[0].data[..], &document(0, "b-one")[..]);
    assert!(ok(store.list_children(KIND, &key("c")).await, "list_children").is_empty());
    assert!(
        ok(
            store.list_children(KIND, &key2("a", "one")).await,
            "list_children"
        )
        .is_empty(),
        "a two-segment key has no children"
    );
    let parts: Vec<String> = ok(store.parts(KIND).await, "parts")
        .iter()
        .map(RecordKey::to_string)
        .collect();
    assert_eq!(parts, ["a", "b"]);

    // A record of one part is not another part's.
    assert!(
        ok(store.get(KIND, &key2("b", "two")).await, "get").is_none(),
        "a/two was found as b/two"
    );
    let b_one = get_or_panic(&store, KIND, &key2("b", "one")).await;
    assert_eq!(&b_one.data[..], &document(0, "b-one")[..]);

    assert!(ok(
        store.remove(KIND, &key2("b", "one"), Expect::Any).await,
        "remove"
    ));
    let parts: Vec<String> = ok(store.parts(KIND).await, "parts")
        .iter()
        .map(RecordKey::to_string)
        .collect();
    assert_eq!(parts, ["a"], "a part without records is still listed");
    assert!(ok(store.list_children(KIND, &key("b")).await, "list_children").is_empty());
}

/// `remove` removes only over the stored version (any with [`Expect::Any`]) and says whether it
/// removed something; a record created again starts over at version 1.
pub async fn records_remove_checks_version(store: SharedStore) {
    let s = key2("del", "s");
    let data = document(0, "del");
    assert_eq!(put(&store, KIND, &s, Expect::Absent, &data).await, Some(1));
    assert_eq!(
        put(&store, KIND, &s, Expect::Version(1), &data).await,
        Some(2)
    );
    for wrong in [Expect::Version(1), Expect::Version(3), Expect::Absent] {
        assert!(
            !ok(store.remove(KIND, &s, wrong).await, "remove"),
            "a remove expecting {wrong:?} (stored: 2) reported a removal"
        );
        let kept = get_or_panic(&store, KIND, &s).await;
        assert_eq!(
            (kept.version, &kept.data[..]),
            (2, &data[..]),
            "a refused remove changed the record"
        );
    }
    assert!(ok(
        store.remove(KIND, &s, Expect::Version(2)).await,
        "remove"
    ));
    assert!(ok(store.get(KIND, &s).await, "get").is_none());
    assert!(
        !ok(store.remove(KIND, &s, Expect::Any).await, "remove"),
        "removing a missing record reported a removal"
    );
    // Created again after a remove, it starts again at version 1.
    assert_eq!(put(&store, KIND, &s, Expect::Absent, &data).await, Some(1));
    assert_eq!(
        put(&store, KIND, &s, Expect::Version(1), &data).await,
        Some(2)
    );
    assert!(
        ok(store.remove(KIND, &s, Expect::Any).await, "remove"),
        "a remove with Expect::Any must remove whatever version is stored"
    );
    assert!(ok(store.get(KIND, &s).await, "get").is_none());
    assert!(
        ok(
            store.list_children(KIND, &key("del")).await,
            "list_children"
        )
        .is_empty()
    );
}

/// Records of two kinds under the same key are two records; records are not credentials of the
/// same name and are never listed as credentials, and deleting one never touches the other.
pub async fn records_kinds_and_credentials_are_independent(store: SharedStore) {
    let a = key("a");
    let a_one = key2("a", "one");
    assert_eq!(
        put(&store, KIND, &a, Expect::Absent, b"{\"k\":1}").await,
        Some(1)
    );
    assert_eq!(
        put(&store, KIND, &a_one, Expect::Absent, b"{}").await,
        Some(1)
    );
    assert_eq!(
        put(&store, OTHER_KIND, &a, Expect::Absent, b"{\"k\":2}").await,
        Some(1),
        "a record of another kind with the same key already existed"
    );
    assert_eq!(&get_or_panic(&store, KIND, &a).await.data[..], b"{\"k\":1}");
    assert_eq!(
        &get_or_panic(&store, OTHER_KIND, &a).await.data[..],
        b"{\"k\":2}"
    );
    assert!(ok(store.list_children(OTHER_KIND, &a).await, "list_children").is_empty());

    let credential = CredentialName::new("a").unwrap_or_else(|e| panic!("{e}"));
    ok(
        store
            .put(&credential, Precondition::None, &sample_tokens("a", T0), T0)
            .await,
        "put",
    );
    assert!(ok(
        CredentialStore::delete(&*store, &credential).await,
        "delete"
    ));
    assert!(ok(
        store.remove(OTHER_KIND, &a, Expect::Any).await,
        "remove"
    ));
    assert!(
        ok(store.get(KIND, &a).await, "get").is_some(),
        "deleting a credential or another kind's record touched a record of the same name"
    );
    assert_eq!(
        ok(store.list_children(KIND, &a).await, "list_children").len(),
        1
    );
    assert!(
        ok(store.list().await, "list").is_empty(),
        "a record is listed as a credential"
    );
}

/// Keys at the limits of the naming rule (128 characters, every allowed character) are stored
/// and listed. (Invalid names cannot reach a store: see [`crate::name`].)
pub async fn records_names_at_the_limits_are_stored(store: SharedStore) {
    let longest = "y".repeat(128);
    let k = key2(&longest, "A.b_c-9");
    assert_eq!(put(&store, KIND, &k, Expect::Absent, b"{}").await, Some(1));
    assert!(ok(store.get(KIND, &k).await, "get").is_some());
    let listed = ok(
        store.list_children(KIND, &key(&longest)).await,
        "list_children",
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, k);
}

/// `list_kind` pages through the records of one kind in key order, each exactly once, and
/// opens their documents.
pub async fn records_list_in_pages(store: SharedStore) {
    let keys = [
        key("b"),
        key2("a", "y"),
        key("a"),
        key2("a", "x"),
        key2("b-1", "z"),
        key("c"),
    ];
    for (i, k) in keys.iter().enumerate() {
        put(&store, KIND, k, Expect::Absent, &document(i as u64, "page")).await;
    }
    put(
        &store,
        OTHER_KIND,
        &key("a0"),
        Expect::Absent,
        &document(99, "other"),
    )
    .await;
    let mut seen = Vec::new();
    let mut after: Option<RecordKey> = None;
    loop {
        let page = ok(store.list_kind(KIND, after.as_ref(), 4).await, "list_kind");
        assert!(page.len() <= 4, "a page holds at most `limit` records");
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        for record in &page {
            let index = keys
                .iter()
                .position(|k| *k == record.key)
                .unwrap_or_else(|| panic!("listed a record never written: {}", record.key));
            assert_eq!(
                counter(record),
                index as u64,
                "the document of {}",
                record.key
            );
            assert_eq!(record.version, 1);
            seen.push(record.key.clone());
        }
    }
    let mut expected = keys.to_vec();
    expected.sort();
    assert_eq!(
        seen, expected,
        "pages in key order, each record once, one kind only"
    );
    let tail = ok(
        store.list_kind(KIND, Some(&key2("a", "y")), 10).await,
        "list_kind",
    );
    let tail: Vec<String> = tail.iter().map(|r| r.key.to_string()).collect();
    assert_eq!(tail, ["b", "b-1/z", "c"]);
    assert!(
        ok(
            store
                .list_kind(RecordKind::new("conformance-none"), None, 10)
                .await,
            "list_kind"
        )
        .is_empty()
    );
}
