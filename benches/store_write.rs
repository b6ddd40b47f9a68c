//! State-store write cost per tick: one `save` of a rollout whose tick has 4 checks, as the
//! controller does after every judged round. Prints a table; run with
//! `cargo bench --bench store_write`. With `CANARYD_BENCH_POSTGRES_URL` set, also the
//! PostgreSQL store, leading its lease, each save fenced by its epoch as a replica's is.

use std::time::Instant;

use canaryd::judge::{Score, ScoreOutcome};
use canaryd::rollout::{Rollout, Tick};
use canaryd::store::leadership::{Leadership, LeaseBackend};
use canaryd::store::postgres::PostgresStore;
use canaryd::store::sqlite::SqliteStore;
use canaryd::store::{MemoryStore, Store};
use canaryd::verdict::{Check, Stats, Verdict};
use chrono::Utc;

fn tick(step: usize) -> Tick {
    let check = |name: &str| {
        let mut c = Check {
            canary: Some(0.0012),
            baseline: Some(0.0011),
            ratio: Some(1.09),
            canary_samples: 40,
            baseline_samples: 40,
            ..Check::named(name, Verdict::Pass, format!("{name} within its lines"))
        };
        c.set_stats(Stats {
            p_value: Some(0.41),
            interval: Some((-0.001, 0.002)),
            estimate: Some(0.0001),
            effect: Some(1.02),
        });
        c
    };
    Tick {
        at: Utc::now(),
        step,
        checks: [
            "error_rate",
            "p95_latency",
            "db_pool_utilization",
            "cpu_utilization",
        ]
        .iter()
        .map(|n| check(n))
        .collect(),
        score: Score {
            value: 100.0,
            outcome: ScoreOutcome::Pass,
            reason: "all pass".into(),
            nodata: false,
        },
        sequential: Default::default(),
        samples_since: None,
        counters_moved: Default::default(),
    }
}

fn measure(name: &str, store: &dyn Store, n: usize) {
    let mut r = Rollout::new(
        format!("ro-bench-{}", std::process::id()),
        "checkout-api".into(),
        "v2".into(),
        Utc::now(),
    );
    store.create(&r, "name: checkout-api\n").expect("create");
    let mut micros: Vec<f64> = Vec::with_capacity(n);
    for i in 0..n {
        let t = tick(i % 4);
        r.last_tick = Some(t.clone());
        r.updated_at = Utc::now();
        let start = Instant::now();
        store.save(&r, Some(&t)).expect("save");
        micros.push(start.elapsed().as_secs_f64() * 1e6);
    }
    micros.sort_by(f64::total_cmp);
    let q = |p: f64| micros[((micros.len() - 1) as f64 * p) as usize];
    println!(
        "| {name:<28} | {n:>5} | {:>9.1} | {:>9.1} | {:>9.1} |",
        q(0.5),
        q(0.9),
        q(0.99)
    );
}

fn main() {
    let n: usize = std::env::var("STORE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().expect("tempdir");
    println!("| store (save rollout + tick of 4 checks) | saves | median µs | p90 µs | p99 µs |");
    println!("|---|---:|---:|---:|---:|");
    measure("memory", &MemoryStore::default(), n);
    let full = SqliteStore::open_file(&dir.path().join("full.db"), true).expect("open");
    measure("sqlite WAL synchronous=FULL", &full, n);
    let normal = SqliteStore::open_file(&dir.path().join("normal.db"), false).expect("open");
    measure("sqlite WAL synchronous=NORMAL", &normal, n);
    if let Ok(url) = std::env::var("CANARYD_BENCH_POSTGRES_URL") {
        let leadership = Leadership::replica();
        let pg = PostgresStore::open(&url, leadership.clone()).expect("open postgres");
        let lease = std::time::Duration::from_secs(3600);
        let epoch = pg
            .acquire("store-bench", "", lease)
            .expect("lease query")
            .expect("lease free (a canaryd replica leads this database?)");
        leadership.grant(epoch, tokio::time::Instant::now() + lease);
        measure("postgresql (fenced write)", &pg, n);
    }
}
