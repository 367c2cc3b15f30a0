//! `database.retention`: old messages are deleted in small batches while ingest goes on, and the file
//! gives the space back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use homewright::config::Retention as Rule;
use homewright::event::{Message, now_millis};
use homewright::housekeeping::{BATCH_ROWS, Housekeeping};
use homewright::store::Store;
use tokio_util::sync::CancellationToken;

use crate::support::count;

const OLD: usize = 30_000;
const DAY_MS: i64 = 86_400_000;

fn message(topic: &str, ts: i64, i: usize) -> Message {
    Message {
        ts,
        topic: topic.into(),
        payload: Bytes::from(format!("{i:06}{}", "x".repeat(200))),
        qos: 1,
        retain: false,
        dup: false,
    }
}

async fn insert(store: &Store, messages: &[Message]) {
    for chunk in messages.chunks(5_000) {
        store
            .insert_messages(&chunk.iter().collect::<Vec<_>>())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_messages_are_purged_in_batches_while_ingest_goes_on_and_the_file_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let store = Store::open(&db).await.unwrap();
    assert_eq!(
        store.auto_vacuum().await.unwrap(),
        2,
        "a new file vacuums incrementally"
    );
    let now = now_millis();
    let old: Vec<Message> = (0..OLD)
        .map(|i| message("sensor/noisy", now - 10 * DAY_MS, i))
        .collect();
    insert(&store, &old).await;
    let recent: Vec<Message> = (0..100)
        .map(|i| message("sensor/noisy", now - DAY_MS, i))
        .collect();
    let other: Vec<Message> = (0..100)
        .map(|i| message("door/front", now - 400 * DAY_MS, i))
        .collect();
    insert(&store, &recent).await;
    insert(&store, &other).await;
    let pages_before = count(&db, "SELECT page_count FROM pragma_page_count()").await;

    let retention = Housekeeping {
        store: store.clone(),
        replicating: false,
        rule_runs_keep: Duration::from_secs(7 * 86_400),
        retention: vec![
            Rule {
                topics: "sensor/#".into(),
                keep: Duration::from_secs(7 * 86_400),
            },
            Rule {
                topics: "nothing/#".into(),
                keep: Duration::from_secs(1),
            },
        ],
    };
    // Ingest keeps committing one message at a time while the purge runs.
    let purging = Arc::new(AtomicBool::new(true));
    let committed_during_purge = Arc::new(AtomicUsize::new(0));
    let ingest = {
        let (store, purging, committed) = (store.clone(), purging.clone(), committed_during_purge.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while purging.load(Ordering::SeqCst) {
                store
                    .insert_messages(&[&message("live/in", now_millis(), i)])
                    .await
                    .unwrap();
                if purging.load(Ordering::SeqCst) {
                    committed.fetch_add(1, Ordering::SeqCst);
                }
                i += 1;
            }
        })
    };
    let report = retention.purge(&CancellationToken::new()).await.unwrap();
    purging.store(false, Ordering::SeqCst);
    ingest.await.unwrap();

    assert_eq!(report.deleted as usize, OLD);
    let pages_after = count(&db, "SELECT page_count FROM pragma_page_count()").await;
    eprintln!(
        "retention: deleted {} in batches of {BATCH_ROWS}; {} messages committed meanwhile; pages {pages_before} -> {pages_after} ({} freed)",
        report.deleted,
        committed_during_purge.load(Ordering::SeqCst),
        report.pages_freed
    );
    assert!(
        committed_during_purge.load(Ordering::SeqCst) > 0,
        "ingest got no turn during the purge"
    );
    assert!(report.pages_freed > 0 && pages_after < pages_before);
    assert_eq!(
        count(&db, "SELECT freelist_count FROM pragma_freelist_count()").await,
        0
    );
    // What is younger than its keep, or matches no rule, stays.
    assert_eq!(
        count(&db, "SELECT count(*) FROM messages WHERE topic = 'sensor/noisy'").await,
        100
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM messages WHERE topic = 'door/front'").await,
        100
    );
    // A second purge finds nothing.
    assert_eq!(
        retention.purge(&CancellationToken::new()).await.unwrap().deleted,
        0
    );
    store.close().await;
}

#[test]
fn retention_entries_are_validated_with_their_key() {
    let text = "database:\n  retention:\n    - topics: \"a/#/b\"\n      keep: 7d\n    - topics: \"#\"\n      keep: forever\n";
    let error = homewright::config::from_yaml(text, std::path::Path::new("h.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("database.retention.topics: `a/#/b` is not a valid MQTT topic filter"),
        "{error}"
    );
    assert!(
        error.contains("database.retention.keep: `forever` is not a duration"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_replicating_only_replicated_messages_are_purged() {
    use homewright::store::replica::Table;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let store = Store::open(&db).await.unwrap();
    let now = now_millis();
    let old: Vec<Message> = (0..100)
        .map(|i| message("sensor/old", now - 30 * DAY_MS, i))
        .collect();
    insert(&store, &old).await;
    // The server has the first 60.
    store.set_replication_mark(Table::Messages, 60).await.unwrap();
    let housekeeping = Housekeeping {
        store: store.clone(),
        replicating: true,
        rule_runs_keep: Duration::from_secs(7 * 86_400),
        retention: vec![Rule {
            topics: "sensor/#".into(),
            keep: Duration::from_secs(86_400),
        }],
    };
    let report = housekeeping.purge(&CancellationToken::new()).await.unwrap();
    assert_eq!(report.deleted, 60);
    assert_eq!(report.held_back, 1);
    assert_eq!(count(&db, "SELECT min(id) FROM messages").await, 61);

    // Everything replicated: all but the newest row go (its id must not be handed out again).
    store.set_replication_mark(Table::Messages, 100).await.unwrap();
    let report = housekeeping.purge(&CancellationToken::new()).await.unwrap();
    assert_eq!(report.deleted, 39);
    assert_eq!(count(&db, "SELECT id FROM messages").await, 100);
}
