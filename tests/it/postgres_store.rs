//! The store contract, one body run against the embedded SQLite store and a real PostgreSQL;
//! and the PostgreSQL store's fencing: a leader whose lease was taken writes nothing.

use crate::common;

use std::time::Duration;

use canaryd::judge::{Score, ScoreOutcome};
use canaryd::rollout::{HookKind, Phase, Rollout, Tick};
use canaryd::store::leadership::{Leadership, LeaseBackend};
use canaryd::store::postgres::PostgresStore;
use canaryd::store::sqlite::SqliteStore;
use canaryd::store::{Delivery, Store, StoreError};
use chrono::{TimeZone, Utc};
use common::pg::PgServer;
use tokio::time::Instant;

fn tick(step: usize, secs: i64) -> Tick {
    Tick {
        at: Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap(),
        step,
        checks: Vec::new(),
        score: Score {
            value: 100.0,
            outcome: ScoreOutcome::Pass,
            reason: format!("tick {secs}"),
            nodata: false,
        },
        sequential: Default::default(),
        samples_since: None,
        counters_moved: Default::default(),
    }
}

fn rollout(id: &str, secs: i64) -> Rollout {
    Rollout::new(
        id.into(),
        "checkout".into(),
        "v2".into(),
        Utc.timestamp_opt(1_700_000_000 + secs, 123_456_000)
            .unwrap(),
    )
}

/// Everything the controller relies on a store for, whichever store it is.
fn contract(store: &dyn Store) {
    store.ping().expect("ping");
    assert!(store.list().unwrap().is_empty());
    assert_eq!(store.get("ro-none").unwrap(), None);
    assert_eq!(store.rule_source("ro-none").unwrap(), None);

    // Created out of id order: listed oldest first.
    let mut b = rollout("ro-b", 1);
    let a = rollout("ro-a", 2);
    store.create(&b, "name: checkout\n# b\n").unwrap();
    store.create(&a, "name: checkout\n# a\n").unwrap();
    let ids: Vec<String> = store.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["ro-b", "ro-a"]);
    assert_eq!(
        store.rule_source("ro-a").unwrap().as_deref(),
        Some("name: checkout\n# a\n")
    );

    // A decision with its tick in one write; the state comes back whole.
    for i in 0..5 {
        b.phase = Phase::Progressing;
        b.step = i;
        b.last_tick = Some(tick(i, i as i64));
        store.save(&b, b.last_tick.as_ref()).unwrap();
    }
    b.reason = Some("a 'quoted' reason; DROP TABLE x; --".into());
    store.save(&b, None).unwrap();
    assert_eq!(store.get("ro-b").unwrap().as_ref(), Some(&b));
    let history = store.history("ro-b", 3).unwrap();
    let steps: Vec<usize> = history.iter().map(|t| t.step).collect();
    assert_eq!(steps, [2, 3, 4], "the last 3 ticks, oldest first");
    assert!(store.history("ro-a", 10).unwrap().is_empty());

    // Saving a rollout that was never created is refused, not invented.
    assert!(store.save(&rollout("ro-ghost", 3), None).is_err());
    assert_eq!(store.get("ro-ghost").unwrap(), None);

    let delivery = |n: u32| Delivery {
        rollout_id: "ro-b".into(),
        hook: HookKind::Rollback,
        idempotency_key: "ro-b:rollback:4:0".into(),
        attempts: n,
        outcome: "failed".into(),
        error: Some(format!("attempt {n}")),
        at: Utc.timestamp_opt(1_700_000_100 + i64::from(n), 0).unwrap(),
    };
    store.record_delivery(&delivery(1)).unwrap();
    store.record_delivery(&delivery(2)).unwrap();
    assert_eq!(
        store.deliveries("ro-b").unwrap(),
        vec![delivery(1), delivery(2)]
    );
    assert!(store.deliveries("ro-a").unwrap().is_empty());
}

#[test]
fn sqlite_keeps_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_file(&dir.path().join("canaryd.db"), true).unwrap();
    contract(&store);
}

/// Leads `store`'s lease by hand (no lease loop): the term is what this test says it is.
fn lead(store: &PostgresStore, leadership: &Leadership, holder: &str, term: Duration) -> u64 {
    let epoch = store
        .acquire(holder, "http://127.0.0.1:1", Duration::from_secs(4))
        .expect("lease query")
        .expect("lease free");
    leadership.grant(epoch, Instant::now() + term);
    epoch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_the_store_contract_and_migrates_once() {
    let pg = PgServer::start();
    let leadership = Leadership::replica();
    let store = PostgresStore::open(&pg.url(), leadership.clone()).expect("open");
    // A follower reads but cannot write.
    assert!(matches!(
        store.create(&rollout("ro-x", 0), ""),
        Err(StoreError::NotLeader(_))
    ));
    lead(&store, &leadership, "a", Duration::from_secs(60));
    contract(&store);
    // A second replica starting on a migrated database applies nothing and sees the same data.
    let again = PostgresStore::open(&pg.url(), Leadership::replica()).expect("open again");
    assert_eq!(again.list().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_was_taken_writes_nothing_and_steps_down() {
    let pg = PgServer::start();
    let (la, lb) = (Leadership::replica(), Leadership::replica());
    let a = PostgresStore::open(&pg.url(), la.clone()).expect("open a");
    let b = PostgresStore::open(&pg.url(), lb.clone()).expect("open b");
    // `a` leads with a four-second lease in the database (long enough that `b`'s first try
    // surely finds it held, even on a loaded machine), but (like a leader that was paused
    // and has not looked at its clock yet) believes its term runs for a minute.
    let ea = lead(&a, &la, "a", Duration::from_secs(60));
    let mut r = rollout("ro-1", 0);
    a.create(&r, "name: checkout\n").unwrap();
    assert!(
        matches!(
            b.acquire("b", "http://b", Duration::from_secs(5)).unwrap(),
            Err(Some(url)) if url == "http://127.0.0.1:1"
        ),
        "the lease is held: b cannot take it and learns where the leader is"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let eb = loop {
        if let Ok(e) = b.acquire("b", "http://b", Duration::from_secs(30)).unwrap() {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b never took the expired lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(eb > ea, "a takeover bumps the epoch");
    lb.grant(eb, Instant::now() + Duration::from_secs(30));

    r.phase = Phase::Promoting;
    let refused = a.save(&r, Some(&tick(0, 1)));
    assert!(
        matches!(refused, Err(StoreError::NotLeader(_))),
        "{refused:?}"
    );
    assert_eq!(la.epoch(), None, "a fenced write ends the writer's term");
    assert!(!a.renew("a", ea, Duration::from_secs(5)).unwrap());
    let stored = b.get("ro-1").unwrap().unwrap();
    assert_eq!(
        stored.phase,
        Phase::Pending,
        "the deposed leader's decision was not written"
    );
    assert!(b.history("ro-1", 10).unwrap().is_empty());

    r.phase = Phase::RollingBack;
    b.save(&r, None).expect("the new leader writes");
    assert!(b.renew("b", eb, Duration::from_secs(30)).unwrap());
}
