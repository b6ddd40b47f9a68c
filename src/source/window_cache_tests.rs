use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::judge::observation::{Grid, Point, Series};
use crate::source::prometheus::QueryFailure;

const STEP: i64 = 10;
const WINDOW: i64 = 120;

fn at(s: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s as u64) + Duration::from_millis(250)
}

/// What a Prometheus answering `[end - window, end]` on the step grid would give member `k`:
/// `version` stands for data that changed since (late scrapes), visible only at `t >= changed`.
fn answer(keys: &[Vec<String>], end: i64, window: i64, changed: i64, version: f64) -> Split {
    Ok(keys
        .iter()
        .enumerate()
        .map(|(i, _)| Series::Points {
            points: (0..)
                .map(|k| end - window + k * STEP)
                .take_while(|t| *t <= end)
                .map(|t| Point {
                    at: t as f64,
                    value: i as f64 * 1000.0 + t as f64 + if t >= changed { version } else { 0.0 },
                })
                .collect(),
        })
        .collect())
}

fn keys(n: usize) -> Vec<Vec<String>> {
    (0..n).map(|i| vec![format!("svc-{i}")]).collect()
}

fn wanted(labels: &[String], keys: &[Vec<String>]) -> Members {
    Members {
        labels: labels.into(),
        keys: keys.into(),
        extra: Extra::Unlabelled,
    }
}

/// Asks through the cache with a fake Prometheus; returns the merged answer and the window the
/// fake was asked for.
async fn ask(
    cache: &Arc<WindowCache>,
    keys: &[Vec<String>],
    end: i64,
    changed: i64,
    version: f64,
) -> (Split, Duration) {
    let labels = vec!["service".to_string()];
    let asked = Arc::new(Mutex::new(Duration::ZERO));
    let (seen, owned) = (Arc::clone(&asked), keys.to_vec());
    let got = cache
        .range_split(
            "q",
            at(end),
            Duration::from_secs(WINDOW as u64),
            Duration::from_secs(STEP as u64),
            wanted(&labels, keys),
            move |f: Fetch| {
                let w = f.window;
                *seen.lock().expect("lock") = w;
                let w = w.as_secs() as i64;
                async move { Ok(answer(&owned, end, w, changed, version)) }
            },
        )
        .await;
    let w = *asked.lock().expect("lock");
    (got.unwrap_or_else(|e| panic!("{e:?}")), w)
}

fn cache() -> Arc<WindowCache> {
    Arc::new(WindowCache::new(Duration::from_secs(30)))
}

#[test]
fn the_plan_reuses_only_points_settled_at_the_last_ask_on_the_same_grid() {
    // 13 points 880..=1000; the last ask ended at 990, so points up to 960 were settled.
    assert_eq!(
        plan_for(Some(990), true, 1000, WINDOW, STEP, 30),
        Ask::From {
            from: 970,
            window: Duration::from_secs(30)
        }
    );
    assert_eq!(plan_for(None, true, 1000, WINDOW, STEP, 30), Ask::Full);
    assert_eq!(
        plan_for(Some(990), false, 1000, WINDOW, STEP, 30),
        Ask::Full,
        "a newcomer"
    );
    assert_eq!(
        plan_for(Some(995), true, 1000, WINDOW, STEP, 30),
        Ask::Full,
        "off the grid"
    );
    assert_eq!(
        plan_for(Some(1000), true, 1000, WINDOW, STEP, 30),
        Ask::Full,
        "not ahead"
    );
    assert_eq!(
        plan_for(Some(1010), true, 1000, WINDOW, STEP, 30),
        Ask::Full,
        "behind"
    );
    assert_eq!(
        plan_for(Some(870), true, 1000, WINDOW, STEP, 30),
        Ask::Full,
        "too old"
    );
    assert_eq!(
        plan_for(Some(990), true, 1000, WINDOW, STEP, 200),
        Ask::Full,
        "nothing settled"
    );
    // Extreme values never panic.
    for (last, end, w, s, settle) in [
        (i64::MIN, i64::MAX, i64::MAX, 1, i64::MAX),
        (i64::MAX, i64::MIN, 0, i64::MAX, 0),
        (0, i64::MAX, i64::MIN, 7, i64::MIN),
        (-5, 5, 3, 0, 1),
    ] {
        let _ = plan_for(Some(last), true, end, w, s, settle);
    }
}

#[tokio::test]
async fn a_partial_ask_merged_with_kept_points_equals_the_full_window() {
    let cache = cache();
    let k = keys(3);
    let (first, w) = ask(&cache, &k, 990, i64::MAX, 0.0).await;
    assert_eq!(w, Duration::from_secs(120));
    assert_eq!(first, answer(&k, 990, WINDOW, i64::MAX, 0.0));
    // Data changed since the last ask from 970 on, the first point that was younger than
    // `settled_after` then (a late scrape): the re-asked points carry it, the kept ones were
    // settled and are equal either way.
    let (second, w) = ask(&cache, &k, 1000, 970, 0.5).await;
    assert_eq!(
        w,
        Duration::from_secs(30),
        "only the unsettled points are asked"
    );
    assert_eq!(second, answer(&k, 1000, WINDOW, 970, 0.5));
    let (third, w) = ask(&cache, &k, 1030, 980, 0.25).await;
    assert_eq!(
        w,
        Duration::from_secs(50),
        "980..=1030: settled up to 970 at the ask ending 1000"
    );
    let mut want = answer(&k, 1030, WINDOW, 980, 0.25);
    // 970 was settled when asked at 1000 (with the 0.5 change): kept, not asked again.
    if let Ok(series) = &mut want {
        for s in series {
            if let Series::Points { points } = s {
                let mut own = points.to_vec();
                for p in own.iter_mut().filter(|p| p.at == 970.0) {
                    p.value += 0.5;
                }
                *points = own.into();
            }
        }
    }
    assert_eq!(third, want);
}

#[tokio::test]
async fn a_newcomer_or_a_failure_asks_the_whole_window_next() {
    let cache = cache();
    let (_, w) = ask(&cache, &keys(2), 990, i64::MAX, 0.0).await;
    assert_eq!(w, Duration::from_secs(120));
    let (got, w) = ask(&cache, &keys(3), 1000, i64::MAX, 0.0).await;
    assert_eq!(
        w,
        Duration::from_secs(120),
        "svc-2 has no earlier points here"
    );
    assert_eq!(got, answer(&keys(3), 1000, WINDOW, i64::MAX, 0.0));

    let labels = vec!["service".to_string()];
    let k = keys(3);
    let failed = cache
        .range_split(
            "q",
            at(1010),
            Duration::from_secs(120),
            Duration::from_secs(10),
            wanted(&labels, &k),
            |_: Fetch| async { Err(QueryFailure::NoAnswer("timed out".into())) },
        )
        .await;
    assert_eq!(failed, Err(QueryFailure::NoAnswer("timed out".into())));
    let (_, w) = ask(&cache, &k, 1020, i64::MAX, 0.0).await;
    assert_eq!(w, Duration::from_secs(120), "the failure dropped the entry");

    let refused = cache
        .range_split(
            "q",
            at(1030),
            Duration::from_secs(120),
            Duration::from_secs(10),
            wanted(&labels, &k),
            |_: Fetch| async { Ok(Err("several batch series for one member".to_string())) },
        )
        .await;
    assert_eq!(
        refused,
        Ok(Err("several batch series for one member".to_string()))
    );
    let (_, w) = ask(&cache, &k, 1040, i64::MAX, 0.0).await;
    assert_eq!(
        w,
        Duration::from_secs(120),
        "an unsplittable answer dropped the entry"
    );
}

#[tokio::test]
async fn windows_or_steps_not_in_whole_seconds_are_asked_whole() {
    let cache = cache();
    let labels = vec!["service".to_string()];
    let k = keys(1);
    for _ in 0..2 {
        let asked = Arc::new(Mutex::new(Duration::ZERO));
        let seen = Arc::clone(&asked);
        let _ = cache
            .range_split(
                "q",
                at(1000),
                Duration::from_millis(120_500),
                Duration::from_secs(10),
                wanted(&labels, &k),
                move |f: Fetch| {
                    let w = f.window;
                    *seen.lock().expect("lock") = w;
                    async {
                        Ok(Ok(vec![Series::Points {
                            points: Default::default(),
                        }]))
                    }
                },
            )
            .await;
        assert_eq!(*asked.lock().expect("lock"), Duration::from_millis(120_500));
    }
}

#[tokio::test]
async fn a_member_without_plain_points_is_not_continued() {
    let cache = cache();
    let labels = vec!["service".to_string()];
    let k = keys(1);
    let odd = |_: Fetch| async { Ok(Ok(vec![Series::Ambiguous { series: 2 }])) };
    let got = cache
        .range_split(
            "q",
            at(990),
            Duration::from_secs(120),
            Duration::from_secs(10),
            wanted(&labels, &k),
            odd,
        )
        .await;
    assert_eq!(got, Ok(Ok(vec![Series::Ambiguous { series: 2 }])));
    let (_, w) = ask(&cache, &k, 1000, i64::MAX, 0.0).await;
    assert_eq!(w, Duration::from_secs(120));
}

#[tokio::test]
async fn an_answer_the_tick_gave_up_on_still_fills_the_cache() {
    let cache = cache();
    let labels = vec!["service".to_string()];
    let k = keys(2);
    let owned = k.clone();
    // The tick stops waiting after 10 ms; Prometheus answers after 100 ms.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(10),
        cache.range_split(
            "q",
            at(990),
            Duration::from_secs(120),
            Duration::from_secs(10),
            wanted(&labels, &k),
            move |f: Fetch| async move {
                let w = f.window;
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(answer(&owned, 990, w.as_secs() as i64, i64::MAX, 0.0))
            },
        ),
    )
    .await;
    assert!(gave_up.is_err(), "the tick was meant to give up first");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cache.asked() != (1, 0) || cache.lock().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the answer never filled the cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (got, w) = ask(&cache, &k, 1000, i64::MAX, 0.0).await;
    assert_eq!(
        w,
        Duration::from_secs(30),
        "the next tick asks only the unsettled points"
    );
    assert_eq!(got, answer(&k, 1000, WINDOW, i64::MAX, 0.0));
}

/// A fake Prometheus that records every ask (window, bound) and answers after `delay`.
fn recording(
    calls: &Arc<Mutex<Vec<(Duration, Bound)>>>,
    keys: &[Vec<String>],
    end: i64,
    delay: Duration,
) -> impl FnOnce(Fetch) -> std::pin::Pin<Box<dyn Future<Output = Result<Split, QueryFailure>> + Send>>
+ Send
+ 'static {
    let (calls, owned) = (Arc::clone(calls), keys.to_vec());
    move |f: Fetch| {
        calls.lock().expect("lock").push((f.window, f.bound));
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(answer(
                &owned,
                end,
                f.window.as_secs() as i64,
                i64::MAX,
                0.0,
            ))
        })
    }
}

#[tokio::test]
async fn a_tick_that_finds_the_whole_window_in_flight_waits_for_it_and_asks_only_the_rest() {
    let cache = cache();
    let labels = vec!["service".to_string()];
    let k = keys(3);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let window = Duration::from_secs(WINDOW as u64);
    let step = Duration::from_secs(STEP as u64);
    // Tick 1 launches the whole window (slow: 300 ms) and gives up after 20 ms.
    let first = tokio::time::timeout(
        Duration::from_millis(20),
        cache.range_split(
            "q",
            at(990),
            window,
            step,
            wanted(&labels, &k),
            recording(&calls, &k, 990, Duration::from_millis(300)),
        ),
    )
    .await;
    assert!(first.is_err(), "the first tick was meant to give up");
    assert_eq!(cache.fills_in_flight(), 1);
    // Tick 2 finds the fill in flight: it sends nothing until the fill ends, then the rest.
    let second = cache
        .range_split(
            "q",
            at(1000),
            window,
            step,
            wanted(&labels, &k),
            recording(&calls, &k, 1000, Duration::ZERO),
        )
        .await;
    assert_eq!(second, Ok(answer(&k, 1000, WINDOW, i64::MAX, 0.0)));
    assert_eq!(
        *calls.lock().expect("lock"),
        vec![
            (window, Bound::Fill),
            (Duration::from_secs(30), Bound::Tick)
        ],
        "one whole window (with the fill's bound), then only the unsettled points"
    );
    assert_eq!(cache.fills_in_flight(), 0);
}

#[tokio::test]
async fn a_tick_giving_up_while_it_waits_for_a_fill_leaves_nothing_behind() {
    let cache = cache();
    let labels = vec!["service".to_string()];
    let k = keys(2);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (window, step) = (Duration::from_secs(120), Duration::from_secs(10));
    let ask = |end: i64, delay: Duration| {
        tokio::time::timeout(
            Duration::from_millis(20),
            cache.range_split(
                "q",
                at(end),
                window,
                step,
                wanted(&labels, &k),
                recording(&calls, &k, end, delay),
            ),
        )
    };
    assert!(ask(990, Duration::from_millis(200)).await.is_err());
    // Ticks that come while the fill runs send nothing of their own.
    for end in [1000, 1010, 1020] {
        assert!(ask(end, Duration::ZERO).await.is_err());
    }
    assert_eq!(
        calls.lock().expect("lock").len(),
        1,
        "no second whole window"
    );
    assert_eq!(cache.fills_in_flight(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cache.fills_in_flight() > 0 {
        assert!(std::time::Instant::now() < deadline, "the fill never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_prometheus_that_is_down_leaves_no_fill_and_no_entry() {
    let cache = cache();
    let labels = vec!["service".to_string()];
    let k = keys(4);
    for tick in 0..50 {
        let got = cache
            .range_split(
                "q",
                at(990 + tick * STEP),
                Duration::from_secs(120),
                Duration::from_secs(10),
                wanted(&labels, &k),
                |f: Fetch| async move {
                    assert_eq!(f.bound, Bound::Fill, "a whole window is a fill");
                    Err(QueryFailure::NoAnswer("connection refused".into()))
                },
            )
            .await;
        assert_eq!(
            got,
            Err(QueryFailure::NoAnswer("connection refused".into()))
        );
        assert_eq!(cache.fills_in_flight(), 0);
    }
    assert_eq!(
        cache.asked(),
        (50, 0),
        "every tick asks whole, one at a time"
    );
    assert!(cache.lock().is_empty());
}

/// The grid each member's points are a view of (`None` for points of their own).
fn grids(split: &Split) -> Vec<Option<Arc<Grid>>> {
    let Ok(series) = split else {
        panic!("not split: {split:?}")
    };
    series
        .iter()
        .map(|s| match s {
            Series::Points { points } => points.shared().cloned(),
            other => panic!("not points: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn every_member_answer_is_a_view_of_the_one_grid_the_cache_remembers() {
    let cache = cache();
    let k = keys(5);
    for end in [990, 1000, 1010, 1040] {
        let (got, _) = ask(&cache, &k, end, i64::MAX, 0.0).await;
        assert_eq!(got, answer(&k, end, WINDOW, i64::MAX, 0.0), "at {end}");
        let remembered = Arc::clone(&cache.lock().values().next().expect("remembered").points);
        for (i, grid) in grids(&got).into_iter().enumerate() {
            let grid = grid.unwrap_or_else(|| panic!("member {i} at {end} is a copy"));
            assert!(Arc::ptr_eq(&grid, &remembered), "member {i} at {end}");
        }
        let Ok(series) = &got else { unreachable!() };
        assert!(
            series.iter().all(|s| match s {
                Series::Points { points } => points.own_heap_bytes() == 0,
                _ => false,
            }),
            "no member holds points of its own"
        );
        assert!(
            remembered.heap_bytes() <= 5 * (13 * size_of::<f64>() + 16),
            "13 points of 8 bytes and a span a member, once for the cache and the answers: {}",
            remembered.heap_bytes()
        );
    }
}

#[tokio::test]
async fn a_replaced_entry_is_freed_with_its_last_view_and_never_before() {
    let cache = cache();
    let k = keys(3);
    let (first, _) = ask(&cache, &k, 990, i64::MAX, 0.0).await;
    let grid = Arc::downgrade(grids(&first)[0].as_ref().expect("a view"));
    // The next tick reuses it and replaces it; the first tick's answers still read it whole.
    let (second, _) = ask(&cache, &k, 1000, i64::MAX, 0.0).await;
    assert_eq!(second, answer(&k, 1000, WINDOW, i64::MAX, 0.0));
    assert!(grid.upgrade().is_some(), "still read by the first answers");
    assert_eq!(first, answer(&k, 990, WINDOW, i64::MAX, 0.0));
    drop(first);
    assert!(grid.upgrade().is_none(), "freed with its last view");
    // A failed tick drops the entry from the map; the second answers keep their points.
    let held = Arc::downgrade(grids(&second)[0].as_ref().expect("a view"));
    let failed = cache
        .range_split(
            "q",
            at(1010),
            Duration::from_secs(WINDOW as u64),
            Duration::from_secs(STEP as u64),
            wanted(&["service".to_string()], &k),
            |_f: Fetch| async { Err(QueryFailure::NoAnswer("down".into())) },
        )
        .await;
    assert!(failed.is_err());
    assert!(cache.lock().is_empty(), "the failed tick forgot the entry");
    assert_eq!(second, answer(&k, 1000, WINDOW, i64::MAX, 0.0));
    drop(second);
    assert!(held.upgrade().is_none());
}

/// A fake Prometheus that answers the window it is asked from `points`, member by member.
async fn ask_points(
    cache: &Arc<WindowCache>,
    keys: &[Vec<String>],
    end: i64,
    points: Vec<Vec<Point>>,
) -> (Split, Duration) {
    let labels = vec!["service".to_string()];
    let asked = Arc::new(Mutex::new(Duration::ZERO));
    let seen = Arc::clone(&asked);
    let got = cache
        .range_split(
            "q",
            at(end),
            Duration::from_secs(WINDOW as u64),
            Duration::from_secs(STEP as u64),
            wanted(&labels, keys),
            move |f: Fetch| {
                *seen.lock().expect("lock") = f.window;
                let from = (end - f.window.as_secs() as i64) as f64;
                let series = points
                    .into_iter()
                    .map(|m| Series::Points {
                        points: m.into_iter().filter(|p| p.at >= from).collect(),
                    })
                    .collect();
                async move { Ok(Ok(series)) }
            },
        )
        .await;
    let w = *asked.lock().expect("lock");
    (got.unwrap_or_else(|e| panic!("{e:?}")), w)
}

#[tokio::test]
async fn points_with_gaps_or_off_the_grid_are_kept_exactly_as_they_came() {
    let cache = cache();
    let k = keys(4);
    // What Prometheus holds, whichever window is asked of it.
    let p = |at: f64, value: f64| Point { at, value };
    let held = |end: i64| -> Vec<Vec<Point>> {
        let on: Vec<i64> = (0..)
            .map(|j| 880 + j * STEP)
            .take_while(|t| *t <= end)
            .collect();
        vec![
            // A gap: no point at 900 nor 910 (the series was absent).
            on.iter()
                .filter(|t| !(900..=910).contains(*t))
                .map(|t| p(*t as f64, *t as f64))
                .collect(),
            // Times half a second off the grid.
            on.iter().map(|t| p(*t as f64 + 0.5, 1.0)).collect(),
            // NaN and -0.0 values, bit for bit.
            on.iter()
                .map(|t| p(*t as f64, if t % 20 == 0 { f64::NAN } else { -0.0 }))
                .collect(),
            on.iter().map(|t| p(*t as f64, 7.0)).collect(),
        ]
    };
    let bits = |split: &Split| -> Vec<Vec<(u64, u64)>> {
        let Ok(series) = split else {
            panic!("{split:?}")
        };
        series
            .iter()
            .map(|s| match s {
                Series::Points { points } => points
                    .iter()
                    .map(|p| (p.at.to_bits(), p.value.to_bits()))
                    .collect(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let whole = |end: i64| -> Split {
        let from = (end - WINDOW) as f64;
        Ok(held(end)
            .into_iter()
            .map(|m| Series::Points {
                points: m.into_iter().filter(|p| p.at >= from).collect(),
            })
            .collect())
    };
    let (first, w) = ask_points(&cache, &k, 1000, held(1000)).await;
    assert_eq!(w, Duration::from_secs(WINDOW as u64));
    assert_eq!(bits(&first), bits(&whole(1000)));
    for end in [1010, 1020] {
        let (got, w) = ask_points(&cache, &k, end, held(end)).await;
        assert_eq!(w, Duration::from_secs(30), "reused at {end}");
        assert_eq!(bits(&got), bits(&whole(end)), "at {end}");
    }
}

#[tokio::test]
async fn a_tick_keeps_the_answer_it_reuses_when_another_tick_fails_meanwhile() {
    let cache = cache();
    let labels = vec!["service".to_string()];
    let k = keys(3);
    let _ = ask(&cache, &k, 990, i64::MAX, 0.0).await;
    // Tick A plans to reuse the entry, then its partial query waits.
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let owned = k.clone();
    let slow = {
        let cache = Arc::clone(&cache);
        let labels = labels.clone();
        let k = k.clone();
        tokio::spawn(async move {
            cache
                .range_split(
                    "q",
                    at(1000),
                    Duration::from_secs(WINDOW as u64),
                    Duration::from_secs(STEP as u64),
                    wanted(&labels, &k),
                    move |f: Fetch| async move {
                        let _ = wait.await;
                        Ok(answer(
                            &owned,
                            1000,
                            f.window.as_secs() as i64,
                            i64::MAX,
                            0.0,
                        ))
                    },
                )
                .await
        })
    };
    while cache.asked() != (1, 1) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Tick B fails and drops the entry from the map.
    let failed = cache
        .range_split(
            "q",
            at(1000),
            Duration::from_secs(WINDOW as u64),
            Duration::from_secs(STEP as u64),
            wanted(&labels, &k),
            |_: Fetch| async { Err(QueryFailure::NoAnswer("timed out".into())) },
        )
        .await;
    assert!(failed.is_err());
    assert!(cache.lock().is_empty(), "the failure dropped the entry");
    release.send(()).expect("tick A waits");
    let got = slow.await.expect("tick A");
    assert_eq!(got, Ok(answer(&k, 1000, WINDOW, i64::MAX, 0.0)));
}

#[tokio::test]
async fn members_in_another_order_or_fewer_reuse_their_own_points() {
    let cache = cache();
    let labels = vec!["service".to_string()];
    // Each member's value tells whose it is and when it was taken.
    let held = |keys: &[Vec<String>], end: i64, window: i64| -> Split {
        Ok(keys
            .iter()
            .map(|k| {
                let n: f64 = k[0].trim_start_matches("svc-").parse().expect("svc-N");
                Series::Points {
                    points: (0..)
                        .map(|j| end - window + j * STEP)
                        .take_while(|t| *t <= end)
                        .map(|t| Point {
                            at: t as f64,
                            value: n * 1000.0 + t as f64,
                        })
                        .collect(),
                }
            })
            .collect())
    };
    let ask = |keys: Vec<Vec<String>>, end: i64| {
        let asked = Arc::new(Mutex::new(Duration::ZERO));
        let seen = Arc::clone(&asked);
        let (cache, labels) = (Arc::clone(&cache), labels.clone());
        async move {
            let got = cache
                .range_split(
                    "q",
                    at(end),
                    Duration::from_secs(WINDOW as u64),
                    Duration::from_secs(STEP as u64),
                    wanted(&labels, &keys),
                    move |f: Fetch| {
                        *seen.lock().expect("lock") = f.window;
                        let got = held(&keys, end, f.window.as_secs() as i64);
                        async move { Ok(got) }
                    },
                )
                .await;
            let w = *asked.lock().expect("lock");
            (got.expect("answered"), w)
        }
    };
    let k = keys(4);
    let _ = ask(k.clone(), 990).await;
    let shuffled = vec![k[3].clone(), k[0].clone(), k[2].clone()];
    let (got, w) = ask(shuffled.clone(), 1000).await;
    assert_eq!(w, Duration::from_secs(30), "every member was known: reused");
    assert_eq!(got, held(&shuffled, 1000, WINDOW));
}

#[tokio::test]
async fn whatever_a_later_window_asks_the_entry_holds_its_points() {
    // Every later end a whole number of steps on, with every settled_after: the merged answer
    // is the whole window's.
    for settle in [10, 25, 30, 60, 110, 130] {
        for ahead in [1, 2, 3, 5, 11, 12, 13] {
            let cache = Arc::new(WindowCache::new(Duration::from_secs(settle)));
            let k = keys(2);
            let _ = ask(&cache, &k, 990, i64::MAX, 0.0).await;
            let end = 990 + ahead * STEP;
            let (got, _) = ask(&cache, &k, end, i64::MAX, 0.0).await;
            assert_eq!(
                got,
                answer(&k, end, WINDOW, i64::MAX, 0.0),
                "settled_after {settle}, {ahead} steps on"
            );
        }
    }
    let cache = cache();
    let k = keys(3);
    let _ = ask(&cache, &k, 1000, i64::MAX, 0.0).await;
    let entries = cache.lock();
    let entry = entries.values().next().expect("remembered");
    assert_eq!(
        entry.points_held(),
        3 * 13,
        "the whole window of each member: the answers read it too"
    );
}

#[test]
fn an_answer_asked_without_the_cache_is_shared_the_same_way() {
    let k = keys(4);
    let mut members = answer(&k, 1000, WINDOW, i64::MAX, 0.0).expect("split");
    // A gap, an off-grid time and a failed member among them.
    members[1] = Series::Points {
        points: vec![
            Point {
                at: 890.0,
                value: f64::NAN,
            },
            Point {
                at: 905.5,
                value: -0.0,
            },
        ]
        .into(),
    };
    members[2] = Series::Failed {
        message: "down".into(),
    };
    let window = Duration::from_secs(WINDOW as u64);
    let step = Duration::from_secs(STEP as u64);
    let got = share_whole(Ok(Ok(members.clone())), at(1000), window, step);
    let bits = |s: &[Series]| -> Vec<Option<Vec<(u64, u64)>>> {
        s.iter()
            .map(|s| match s {
                Series::Points { points } => Some(
                    points
                        .iter()
                        .map(|p| (p.at.to_bits(), p.value.to_bits()))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    };
    let Ok(Ok(shared)) = &got else {
        panic!("{got:?}")
    };
    assert_eq!(bits(shared), bits(&members));
    assert_eq!(shared[2], members[2], "a failed member keeps its failure");
    let grids: Vec<_> = shared
        .iter()
        .filter_map(|s| match s {
            Series::Points { points } => Some(points.shared().expect("a view")),
            _ => None,
        })
        .collect();
    assert_eq!(grids.len(), 3);
    assert!(grids.iter().all(|g| Arc::ptr_eq(g, grids[0])), "one grid");
    // Not whole seconds: left as it came; a failure passes through.
    let odd = share_whole(
        Ok(Ok(members.clone())),
        at(1000),
        window / 3 * 2 + Duration::from_millis(1),
        step,
    );
    let Ok(Ok(odd)) = odd else { panic!() };
    assert!(
        odd.iter()
            .all(|s| !matches!(s, Series::Points { points } if points.shared().is_some()))
    );
    let down = Err(QueryFailure::NoAnswer("refused".into()));
    assert_eq!(share_whole(down.clone(), at(1000), window, step), down);
}

#[tokio::test]
async fn the_entry_keeps_its_members_keys_compactly_not_the_ticks_own() {
    let cache = cache();
    let k = keys(3);
    let members = wanted(&["service".to_string()], &k);
    let tick_keys = Arc::clone(&members.keys);
    let owned = k.clone();
    let got = cache
        .range_split(
            "q",
            at(1000),
            Duration::from_secs(WINDOW as u64),
            Duration::from_secs(STEP as u64),
            members,
            move |_f: Fetch| async move { Ok(answer(&owned, 1000, WINDOW, i64::MAX, 0.0)) },
        )
        .await;
    assert_eq!(got, Ok(answer(&k, 1000, WINDOW, i64::MAX, 0.0)));
    assert_eq!(
        Arc::strong_count(&tick_keys),
        1,
        "the tick's keys are let go with the tick"
    );
    // And the next tick still finds every member.
    let (next, w) = ask(&cache, &k, 1010, i64::MAX, 0.0).await;
    assert!(w < Duration::from_secs(WINDOW as u64), "reused");
    assert_eq!(next, answer(&k, 1010, WINDOW, i64::MAX, 0.0));
}
