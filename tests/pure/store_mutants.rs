//! The store's recovery path at the edges `cargo mutants` probes (BENCHMARKS.md, "Mutation
//! testing", `src/store/sqlite.rs` and `src/controller/recover.rs`): every `Store` call of the
//! SQLite store reads back what was written, and `Controller::recover` resumes each live rollout
//! once, on the rule text it started with. In process, on a real SQLite file and a real hook
//! receiver on loopback; Prometheus is never asked (the analysis interval is an hour).

use std::sync::Arc;
use std::time::Duration;

use canaryd::actions::HookRunner;
use canaryd::controller::Controller;
use canaryd::demo::receiver::HookReceiver;
use canaryd::judge::{Score, ScoreOutcome};
use canaryd::rollout::{Event, HookKind, Phase, Plan, PlanStep, Rollout, Tick, handle};
use canaryd::rules::parse_rule;
use canaryd::source::{PrometheusConfig, PrometheusSource};
use canaryd::store::sqlite::{DB_FILE, SqliteStore, StartMode};
use canaryd::store::{Delivery, Store};
use canaryd::verdict::{Check, Verdict};
use chrono::{DateTime, TimeZone, Utc};

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

fn plan() -> Plan {
    let step = |weight, hold| PlanStep {
        weight,
        hold: Duration::from_secs(hold),
        approval: false,
    };
    Plan {
        steps: vec![step(5, 3600), step(100, 0)],
        warmup: Duration::from_secs(0),
        failure_limit: 3,
        nodata_limit: 2,
        on_nodata: Default::default(),
        windows: None,
        lifecycle: Default::default(),
    }
}

/// A rollout of `rule` just started at `secs`: its first `set_weight` decided, not delivered.
fn started(id: &str, rule: &str, secs: i64) -> Rollout {
    let r = Rollout::new(id.into(), rule.into(), "v2".into(), at(secs));
    let t = handle(&r, &plan(), Event::Start, at(secs));
    assert_eq!(t.rejected, None);
    assert!(t.rollout.pending.is_some(), "{:?}", t.rollout);
    t.rollout
}

/// A rollout that rolled back and whose rollback was delivered: finished.
fn rolled_back(id: &str, rule: &str, secs: i64) -> Rollout {
    let p = plan();
    let mut r = started(id, rule, secs);
    for e in [
        Event::HookSucceeded {
            hook: HookKind::SetWeight,
        },
        Event::Abort {
            reason: "bad".into(),
        },
        Event::HookSucceeded {
            hook: HookKind::Rollback,
        },
    ] {
        r = handle(&r, &p, e, at(secs + 1)).rollout;
    }
    assert_eq!(r.phase, Phase::RolledBack);
    r
}

fn tick(step: usize, secs: i64) -> Tick {
    Tick {
        at: at(secs),
        step,
        checks: vec![Check::named("up", Verdict::Pass, format!("tick at {secs}"))],
        score: Score {
            value: 100.0,
            outcome: ScoreOutcome::Pass,
            reason: String::new(),
            nodata: false,
        },
        sequential: Default::default(),
        samples_since: None,
        counters_moved: Default::default(),
    }
}

fn delivery(id: &str, n: u32) -> Delivery {
    Delivery {
        rollout_id: id.into(),
        hook: HookKind::SetWeight,
        idempotency_key: format!("{id}-key-{n}"),
        attempts: n,
        outcome: "delivered".into(),
        error: None,
        at: at(i64::from(n)),
    }
}

#[test]
fn every_sqlite_store_call_reads_back_what_was_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), StartMode::Resume).expect("open");
    assert_eq!(store.path(), dir.path().join(DB_FILE));
    store.ping().expect("ping");

    // Created out of id order: listed by creation time, then id.
    let (b, c, a) = (
        started("r-b", "api", 0),
        started("r-c", "api", 0),
        rolled_back("r-a", "web", 5),
    );
    for (r, text) in [(&b, "name: api # b\n"), (&c, ""), (&a, "name: web\n")] {
        store.create(r, text).expect("create");
    }
    assert!(store.create(&b, "again").is_err(), "an id is created once");
    let ids = |v: Vec<Rollout>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list().expect("list")), ["r-b", "r-c", "r-a"]);
    assert_eq!(store.get("r-b").expect("get"), Some(b.clone()));
    assert_eq!(store.get("r-a").expect("get"), Some(a.clone()));
    assert_eq!(store.get("nope").expect("get"), None);
    assert_eq!(
        store.rule_source("r-b").expect("source").as_deref(),
        Some("name: api # b\n")
    );
    assert_eq!(
        store.rule_source("r-c").expect("source").as_deref(),
        Some("")
    );
    assert_eq!(store.rule_source("nope").expect("source"), None);
    assert_eq!(
        ids(store.list_in("web", Phase::RolledBack).expect("list_in")),
        ["r-a"]
    );
    assert_eq!(
        ids(store.list_in("api", Phase::Progressing).expect("list_in")),
        ["r-b", "r-c"]
    );
    assert!(
        store
            .list_in("api", Phase::RolledBack)
            .expect("list_in")
            .is_empty()
    );

    // A saved decision replaces the state; its tick joins the history, oldest first.
    let mut b2 = b.clone();
    b2.reason = Some("saved once".into());
    store.save(&b2, Some(&tick(0, 10))).expect("save");
    store.save(&b2, Some(&tick(0, 20))).expect("save");
    store.save(&b2, None).expect("save without a tick");
    assert_eq!(store.get("r-b").expect("get"), Some(b2.clone()));
    let seconds = |h: Vec<Tick>| {
        h.iter()
            .map(|t| t.at.timestamp() - at(0).timestamp())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seconds(store.history("r-b", 10).expect("history")),
        [10, 20]
    );
    assert_eq!(seconds(store.history("r-b", 1).expect("history")), [20]);
    assert_eq!(store.history("r-b", 10).expect("history")[1], tick(0, 20));
    assert!(store.history("r-c", 10).expect("history").is_empty());

    // A decision for a rollout never created is refused, alone in a batch.
    let ghost = started("ghost", "api", 0);
    assert!(store.save(&ghost, None).is_err());
    let mut c2 = c.clone();
    c2.reason = Some("batched".into());
    let batch = store.save_many(&[(&ghost, None), (&c2, Some(&tick(0, 30)))]);
    assert_eq!(batch.commits, 1);
    assert!(batch.results[0].is_err());
    assert!(batch.results[1].is_ok(), "{:?}", batch.results[1]);
    assert_eq!(store.get("r-c").expect("get"), Some(c2));
    assert_eq!(seconds(store.history("r-c", 10).expect("history")), [30]);
    assert_eq!(store.get("ghost").expect("get"), None);

    // Deliveries, per rollout, oldest first.
    for d in [delivery("r-b", 1), delivery("r-c", 2), delivery("r-b", 3)] {
        store.record_delivery(&d).expect("record");
    }
    assert_eq!(
        store.deliveries("r-b").expect("deliveries"),
        [delivery("r-b", 1), delivery("r-b", 3)]
    );
    assert!(store.deliveries("r-a").expect("deliveries").is_empty());

    // All of it is on disk: a reopened store reads the same.
    drop(store);
    let store = SqliteStore::open(dir.path(), StartMode::Resume).expect("reopen");
    assert_eq!(store.get("r-b").expect("get"), Some(b2));
    assert_eq!(store.deliveries("r-b").expect("deliveries").len(), 2);
}

/// `ping` (what `/health/ready` asks) really asks the database: a store whose tables are gone
/// (a file replaced or emptied under the daemon) is not ready, though the connection is open.
#[test]
fn ping_fails_when_the_database_cannot_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), StartMode::Resume).expect("open");
    store.ping().expect("a fresh store answers");
    let other = rusqlite::Connection::open(store.path()).expect("second connection");
    other
        .execute_batch("DROP TABLE ticks; DROP TABLE rollouts;")
        .expect("drop");
    drop(other);
    let err = store
        .ping()
        .expect_err("a store without its tables is not ready");
    assert!(err.to_string().contains("rollouts"), "{err}");
}

/// A rule whose `set_weight` hook posts to `path` on the receiver.
fn rule_text(name: &str, receiver: &HookReceiver, path: &str) -> String {
    format!(
        "name: {name}\nselector: {{ canary: 'track=\"canary\"', baseline: 'track=\"baseline\"' }}\n\
         steps: [{{ weight: 5, hold: 1h }}, {{ weight: 100 }}]\nanalysis: {{ interval: 1h }}\n\
         metrics:\n  - {{ name: up, query: 'sum(up{{ {{{{selector}}}} }})', rollback_below: 1 }}\n\
         hooks:\n  set_weight: {{ url: \"{}\" }}\n",
        receiver.url(path)
    )
}

/// What recovery must do with each kind of stored rollout: resume a live one on the rule text
/// it started with even when the loaded rule has changed since (its owed `set_weight` goes to
/// the old hook), fall back to the loaded rule when no text was kept, leave a finished one and
/// one with no rule at all alone, and never start a second task for a rollout already running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_resumes_each_live_rollout_once_on_the_rule_text_it_started_with() {
    let receiver = HookReceiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path(), StartMode::Resume).expect("open"));
    let old = rule_text("api", &receiver, "/old");
    let new = rule_text("api", &receiver, "/new");
    assert_ne!(old, new);
    let rows = [
        (started("on-old-text", "api", 0), old.clone()),
        (started("no-text", "api", 1), String::new()),
        (rolled_back("finished", "api", 2), old.clone()),
        (started("orphan", "gone", 3), String::new()),
    ];
    for (r, text) in &rows {
        store.create(r, text).expect("create");
    }
    let loaded = parse_rule(std::path::Path::new("api.yaml"), &new).expect("rule");
    let source = PrometheusSource::new(&PrometheusConfig {
        url: "http://127.0.0.1:9".into(),
        timeout: Duration::from_secs(1),
        bearer_token: None,
        basic_auth: None,
    })
    .expect("source");
    let controller = Controller::new(
        [("api".to_string(), Arc::new(loaded))]
            .into_iter()
            .collect(),
        store.clone(),
        source,
        HookRunner::new().expect("hooks"),
    );

    assert_eq!(controller.recover().expect("recover"), 2);
    assert!(
        receiver
            .wait_for(|c| c.len() >= 2, Duration::from_secs(20))
            .await,
        "the owed set_weight calls never arrived: {:?}",
        receiver.calls()
    );
    assert_eq!(controller.recover().expect("recover again"), 0);
    let mut calls: Vec<(String, String)> = receiver
        .calls()
        .iter()
        .map(|c| {
            (
                c.path.clone(),
                c.body["rollout_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    calls.sort();
    assert_eq!(
        calls,
        [
            ("/new".to_string(), "no-text".to_string()),
            ("/old".to_string(), "on-old-text".to_string()),
        ]
    );
    let mut live = controller.live_of_rule("api");
    live.sort();
    assert_eq!(live, ["no-text", "on-old-text"]);
    assert!(controller.live_of_rule("gone").is_empty());
    controller.shutdown().await;
}
