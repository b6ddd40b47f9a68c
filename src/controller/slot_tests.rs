//! The slot planned from the registry ([`super::super::registry`]): a rollout that published a
//! wish for analysis is gathered at the slot instant, so an actor that takes its slot late
//! still gets the slot's answer, and costs no query of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::*;
use crate::controller::analysis::Fetched;
use crate::judge::observation::Series;
use crate::rollout::Phase;
use crate::source::PrometheusConfig;

/// A rule of one window metric over `service`'s canary and baseline.
pub(super) fn member(service: &str, deadline: Duration) -> (Member, Arc<Rollout>) {
    let yaml = format!(
        r#"name: {service}
selector:
  canary: 'service="{service}", track="canary"'
  baseline: 'service="{service}", track="baseline"'
steps:
  - {{ weight: 10, hold: 1m }}
  - {{ weight: 100 }}
metrics:
  - name: errors
    query: sum(rate(errors{{ {{{{selector}}}} }}[1m]))
    rollback_above: 0.05
hooks: {{}}
"#
    );
    let rule = crate::rules::parse_rule(std::path::Path::new("r.yaml"), &yaml)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let mut r = Rollout::new(
        format!("ro-{service}"),
        service.into(),
        "v2".into(),
        chrono::Utc::now(),
    );
    r.phase = Phase::Progressing;
    r.step_started_at = Some(chrono::Utc::now() - chrono::TimeDelta::seconds(60));
    (Member::new(Arc::new(rule), deadline), Arc::new(r))
}

/// The values of `label="…"` or `label=~"a|b"` in a decoded query.
fn values(query: &str, label: &str) -> Vec<String> {
    let Some(at) = query.find(&format!("{label}=")) else {
        return Vec::new();
    };
    let rest = query[at + label.len() + 1..].trim_start_matches('~');
    let quoted = rest.trim_start_matches('"');
    let end = quoted.find('"').unwrap_or(quoted.len());
    quoted[..end].split('|').map(str::to_string).collect()
}

/// `application/x-www-form-urlencoded` decoding, enough for PromQL.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(b);
                    i += 2;
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A loopback stand-in for Prometheus that counts range queries and answers each with one
/// series per service and track its matchers name.
async fn prometheus(asked: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "http://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let asked = asked.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 16 * 1024];
                // Headers, then a body of content-length.
                while let Ok(n) = conn.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(head) = text.find("\r\n\r\n") {
                        let length = text[..head]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .and_then(|v| v.trim().parse::<usize>().ok())
                            })
                            .unwrap_or(0);
                        if buf.len() >= head + 4 + length {
                            break;
                        }
                    }
                }
                let request = decode(&String::from_utf8_lossy(&buf));
                if request.contains("query_range") {
                    asked.fetch_add(1, Ordering::SeqCst);
                }
                let mut result = Vec::new();
                for s in values(&request, "service") {
                    for t in values(&request, "track") {
                        result.push(format!(
                            r#"{{"metric":{{"service":"{s}","track":"{t}"}},"values":[[1,"0.5"]]}}"#
                        ));
                    }
                }
                let body = format!(
                    r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
                    result.join(",")
                );
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    url
}

fn points(g: &Gathered) -> usize {
    match g.metrics.get("errors") {
        Some(Fetched::Window {
            canary: Series::Points { points: c },
            baseline: Series::Points { points: b },
        }) => c.len() + b.len(),
        other => panic!("not the window's points: {other:?}"),
    }
}

#[tokio::test]
async fn a_slow_actor_gets_its_data_from_the_slots_query_at_no_extra_query() {
    let asked = Arc::new(AtomicUsize::new(0));
    let url = prometheus(asked.clone()).await;
    let source = PrometheusSource::new(&PrometheusConfig {
        url,
        timeout: Duration::from_secs(5),
        bearer_token: None,
        basic_auth: None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let (_stop, shutdown) = watch::channel(false);
    let s = Scheduler::start(source, stops(shutdown));
    let interval = Duration::from_secs(2);
    let mut actors = Vec::new();
    for service in ["sa", "sb", "sc"] {
        let (m, rollout) = member(service, interval);
        let r = s.register(&rollout.id, interval, false, m, poke());
        r.publish(Wanted::of(&rollout, Duration::ZERO), &rollout);
        actors.push(r);
    }
    // Each actor as `task` is: the slot's planned answer, or else it asks for its tick.
    let members: Vec<(Member, Arc<Rollout>)> = ["sa", "sb", "sc"]
        .iter()
        .map(|s| member(s, interval))
        .collect();
    let takes = actors.into_iter().zip(members).zip([0u64, 0, 600]).map(
        |((mut r, (m, rollout)), slow)| async move {
            let due = tokio::time::timeout(Duration::from_secs(10), r.due.recv())
                .await
                .unwrap_or_else(|_| panic!("no slot within 10 s"))
                .unwrap_or_else(|| panic!("scheduler gone"));
            // Busy past the collect window (saving its last decision, say).
            tokio::time::sleep(Duration::from_millis(slow)).await;
            let answer = match due.planned {
                Some(planned) => {
                    let _ = due.answer.send(None);
                    planned.answer
                }
                None => {
                    let (reply, answer) = oneshot::channel();
                    let request = TickRequest {
                        rule: m.rule,
                        rollout,
                        deadline: m.deadline,
                        reply,
                    };
                    let _ = due.answer.send(Some(request));
                    answer
                }
            };
            (answer.await, r)
        },
    );
    let got = futures_util::future::join_all(takes).await;
    let mut ends = Vec::new();
    for (answer, _registration) in &got {
        let gathered = match answer {
            Ok(Ok(g)) => g,
            other => panic!("no answer from the slot: {other:?}"),
        };
        assert_eq!(points(gathered), 2, "{gathered:?}");
        ends.push(gathered.at);
    }
    assert!(ends.iter().all(|e| *e == ends[0]), "one slot: {ends:?}");
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "one batch for the slot's three rollouts, none for the late one"
    );
}

#[tokio::test]
async fn a_rollout_that_published_no_wish_is_asked_and_one_not_yet_out_of_warmup_too() {
    let source = down_source();
    let (_stop, shutdown) = watch::channel(false);
    let s = Scheduler::start(source, stops(shutdown));
    let interval = Duration::from_millis(300);
    let (m, rollout) = member("sa", interval);
    let mut quiet = s.register("quiet", interval, false, m.clone(), poke());
    let mut warming = s.register("warming", interval, false, m, poke());
    warming.publish(Wanted::of(&rollout, Duration::from_secs(3600)), &rollout);
    for r in [&mut quiet, &mut warming] {
        let due = tokio::time::timeout(Duration::from_secs(5), r.due.recv())
            .await
            .unwrap_or_else(|_| panic!("no slot within 5 s"))
            .unwrap_or_else(|| panic!("scheduler gone"));
        assert!(due.planned.is_none(), "planned without a wish due now");
        let _ = due.answer.send(None);
    }
}

/// Successive slots' queries end exactly one interval apart, whenever the daemon got to them:
/// the window cache reuses points only when ends lie on one step grid, and an end read off the
/// clock when the slot ran drifted by the slot's delay (a second off now and then sent the
/// whole window again at 10,000 rollouts).
#[tokio::test]
async fn successive_slots_end_exactly_one_interval_apart() {
    let source = down_source();
    let (_stop, shutdown) = watch::channel(false);
    let s = Scheduler::start(source, stops(shutdown));
    let interval = Duration::from_millis(700);
    let (m, rollout) = member("ends", interval);
    let mut r = s.register(&rollout.id, interval, false, m, poke());
    let mut ends = Vec::new();
    for _ in 0..3 {
        r.publish(Wanted::of(&rollout, Duration::ZERO), &rollout);
        let due = tokio::time::timeout(Duration::from_secs(10), r.due.recv())
            .await
            .unwrap_or_else(|_| panic!("no slot within 10 s"))
            .unwrap_or_else(|| panic!("scheduler gone"));
        let Some(planned) = due.planned else {
            panic!("the published wish was not planned");
        };
        let _ = due.answer.send(None);
        match planned.answer.await {
            // Prometheus is down: the metrics failed, but the tick says where its window ended.
            Ok(Ok(g)) => ends.push(g.at),
            other => panic!("no answer from the slot: {other:?}"),
        }
    }
    for pair in ends.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).to_std().ok(),
            Some(interval),
            "ends {ends:?}"
        );
    }
}

/// A scheduler's stop watches: `shutdown`, and a term that never ends.
pub(super) fn stops(shutdown: watch::Receiver<bool>) -> super::Stops {
    super::Stops {
        shutdown,
        lead: crate::store::leadership::Leadership::always().subscribe(),
    }
}

/// A stop handle for a registration whose actor is the test itself.
pub(super) fn poke() -> Arc<dyn super::super::commands::Poke> {
    super::super::commands::queue::<()>().1.poker()
}

/// A source whose Prometheus refuses every connection: a slot still answers, every metric
/// failed.
pub(super) fn down_source() -> PrometheusSource {
    PrometheusSource::new(&PrometheusConfig {
        url: "http://127.0.0.1:9".into(),
        timeout: Duration::from_secs(1),
        bearer_token: None,
        basic_auth: None,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}
