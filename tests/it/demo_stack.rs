//! The demo stack against the real binaries: what canaryd's own integration tests build on.
//!
//! Each test starts its own processes on free loopback ports and polls with deadlines instead of
//! sleeping, so they run in parallel and stay under 30 s each.

use std::net::SocketAddr;
use std::time::Duration;

use canaryd::demo::alertmanager::{AlertmanagerOptions, AlertmanagerProcess};
use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::service::{DemoService, Profile, Track};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const LOOPBACK: &str = "127.0.0.1:0";

const CANARY_ERROR_RATIO: &str = r#"sum(rate(http_requests_total{track="canary",code="500"}[5s])) / sum(rate(http_requests_total{track="canary"}[5s]))"#;

async fn service_and_prometheus()
-> Result<(DemoService, PrometheusProcess), Box<dyn std::error::Error>> {
    let service = DemoService::start("checkout-api", LOOPBACK.parse::<SocketAddr>()?).await?;
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets: vec![service.addr().to_string()],
        ..PrometheusOptions::default()
    })
    .await?;
    Ok((service, prometheus))
}

/// Polls `promql` until its value satisfies `ok`, returning the last value seen.
async fn wait_for_value(
    prometheus: &PrometheusProcess,
    promql: &str,
    ok: impl Fn(f64) -> bool,
    timeout: Duration,
) -> Result<f64, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        last = prometheus.query_value(promql).await?.or(last);
        if let Some(value) = last
            && ok(value)
        {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(
                format!("{promql} never satisfied the condition; last value {last:?}").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn prometheus_sees_the_canary_error_rate_change_to_twenty_percent() -> TestResult {
    let (service, prometheus) = service_and_prometheus().await?;
    prometheus
        .wait_for_series(CANARY_ERROR_RATIO, Duration::from_secs(30))
        .await?;
    let before = wait_for_value(
        &prometheus,
        CANARY_ERROR_RATIO,
        |v| v < 0.01,
        Duration::from_secs(5),
    )
    .await?;
    assert!(
        (before - 0.0005).abs() < 0.0005,
        "healthy canary error ratio was {before}"
    );

    service.update(Track::Canary, |p| p.error_rate = 0.2);
    assert_eq!(service.profile(Track::Canary).error_rate, 0.2);
    // Once the 5 s window holds only scrapes taken after the change, the deterministic
    // counters make the ratio exactly 0.2 up to float rounding.
    let after = wait_for_value(
        &prometheus,
        CANARY_ERROR_RATIO,
        |v| (v - 0.2).abs() < 0.005,
        Duration::from_secs(15),
    )
    .await?;
    assert!((after - 0.2).abs() < 0.005);

    let baseline = r#"sum(rate(http_requests_total{track="baseline",code="500"}[5s])) / sum(rate(http_requests_total{track="baseline"}[5s]))"#;
    let baseline = prometheus
        .query_value(baseline)
        .await?
        .ok_or("no baseline ratio")?;
    assert!(
        baseline < 0.01,
        "the baseline must be unaffected, got {baseline}"
    );
    service.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn prometheus_computes_every_metric_of_the_example_rule_file() -> TestResult {
    let (_service, prometheus) = service_and_prometheus().await?;
    let sel = r#"service="checkout-api", track="canary""#;
    let p95 = format!(
        "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{{sel}}}[5s])))"
    );
    let pool =
        format!("sum(db_pool_connections_in_use{{{sel}}}) / sum(db_pool_connections_max{{{sel}}})");
    let cpu = format!("avg(rate(process_cpu_seconds_total{{{sel}}}[5s]))");
    prometheus
        .wait_for_series(&p95, Duration::from_secs(30))
        .await?;
    // Lognormal(median 0.12 s, sigma 0.5): p95 = 0.12 * e^(1.645 * 0.5) ≈ 0.27 s, which
    // histogram_quantile interpolates inside the 0.25..0.5 bucket.
    let p95 = wait_for_value(
        &prometheus,
        &p95,
        |v| v > 0.25 && v < 0.5,
        Duration::from_secs(5),
    )
    .await?;
    assert!(p95 > 0.25 && p95 < 0.5);
    let pool = wait_for_value(
        &prometheus,
        &pool,
        |v| (v - 0.4).abs() < 1e-9,
        Duration::from_secs(5),
    )
    .await?;
    assert!((pool - 0.4).abs() < 1e-9);
    let cpu = wait_for_value(
        &prometheus,
        &cpu,
        |v| (v - 0.35).abs() < 0.02,
        Duration::from_secs(5),
    )
    .await?;
    assert!((cpu - 0.35).abs() < 0.02);
    Ok(())
}

#[tokio::test]
async fn prometheus_comes_back_on_the_same_port_with_its_data_after_a_stop() -> TestResult {
    let (_service, mut prometheus) = service_and_prometheus().await?;
    let url = prometheus.url();
    let scrapes = r#"count_over_time(up{job="demo"}[1m])"#;
    wait_for_value(&prometheus, scrapes, |n| n >= 3.0, Duration::from_secs(10)).await?;

    prometheus.stop().await;
    assert!(
        prometheus.query("up").await.is_err(),
        "a stopped Prometheus must not answer"
    );

    prometheus.restart().await?;
    assert_eq!(prometheus.url(), url);
    // Right after the restart, the scrapes taken before the stop are back (WAL replay): there
    // has been no time for three new ones.
    let after_restart = prometheus.query_value(scrapes).await?.unwrap_or(0.0);
    assert!(
        after_restart >= 3.0,
        "only {after_restart} scrapes after the restart"
    );
    // And scraping resumes.
    wait_for_value(
        &prometheus,
        scrapes,
        |n| n > after_restart,
        Duration::from_secs(10),
    )
    .await?;
    // The lifecycle API is on, so rule files can be reloaded in place.
    prometheus.reload().await?;
    Ok(())
}

#[tokio::test]
async fn alertmanager_starts_and_reports_its_status() -> TestResult {
    let receiver = HookReceiver::start().await?;
    let alertmanager = AlertmanagerProcess::start(AlertmanagerOptions {
        webhook_urls: vec![receiver.url("/alerts")],
        ..AlertmanagerOptions::default()
    })
    .await?;
    let status: serde_json::Value = reqwest::get(format!("{}/api/v2/status", alertmanager.url()))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let config = status
        .pointer("/config/original")
        .and_then(|c| c.as_str())
        .ok_or("status without config.original")?;
    assert!(
        config.contains(&receiver.url("/alerts")),
        "config was {config}"
    );
    Ok(())
}

#[tokio::test]
async fn a_canary_alert_travels_from_prometheus_through_alertmanager_to_the_receiver() -> TestResult
{
    let receiver = HookReceiver::start().await?;
    let alertmanager = AlertmanagerProcess::start(AlertmanagerOptions {
        webhook_urls: vec![receiver.url("/alerts")],
        ..AlertmanagerOptions::default()
    })
    .await?;
    let service = DemoService::start("checkout-api", LOOPBACK.parse()?).await?;
    let rules = tempfile::NamedTempFile::with_suffix(".yml")?;
    std::fs::write(
        rules.path(),
        format!(
            "groups:\n- name: canary\n  rules:\n  - alert: CanaryErrors\n    expr: '({CANARY_ERROR_RATIO}) > 0.1'\n    labels: {{ severity: critical, service: checkout-api }}\n"
        ),
    )?;
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets: vec![service.addr().to_string()],
        rule_files: vec![rules.path().to_owned()],
        alertmanagers: vec![alertmanager.address()],
        ..PrometheusOptions::default()
    })
    .await?;
    prometheus
        .wait_for_series(CANARY_ERROR_RATIO, Duration::from_secs(30))
        .await?;

    service.update(Track::Canary, |p| p.error_rate = 0.5);
    let firing = |calls: &[canaryd::demo::receiver::ReceivedCall]| {
        calls.iter().any(|c| {
            c.body["status"] == "firing"
                && c.body["alerts"][0]["labels"]["alertname"] == "CanaryErrors"
        })
    };
    assert!(
        receiver.wait_for(firing, Duration::from_secs(30)).await,
        "no firing CanaryErrors webhook; got {:?}",
        receiver.calls()
    );
    let call = receiver
        .calls()
        .into_iter()
        .find(|c| firing(std::slice::from_ref(c)))
        .ok_or("vanished")?;
    assert_eq!(call.path, "/alerts");
    assert_eq!(call.body["alerts"][0]["labels"]["severity"], "critical");
    assert_eq!(
        call.body["alerts"][0]["labels"]["track"],
        serde_json::Value::Null
    );

    // send_resolved: fixing the canary produces a "resolved" notification too.
    service.update(Track::Canary, |p| p.error_rate = 0.0);
    let resolved = |calls: &[canaryd::demo::receiver::ReceivedCall]| {
        calls.iter().any(|c| c.body["status"] == "resolved")
    };
    assert!(
        receiver.wait_for(resolved, Duration::from_secs(30)).await,
        "no resolved webhook; got {:?}",
        receiver.calls()
    );
    Ok(())
}

#[tokio::test]
async fn hook_receiver_fails_twice_then_records_the_third_attempt_once() -> TestResult {
    let receiver = HookReceiver::start().await?;
    receiver.fail_next(2);
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = client
            .post(receiver.url("/weight"))
            .header("Idempotency-Key", "abc")
            .json(&serde_json::json!({ "event": "set_weight", "weight": 5 }))
            .send()
            .await?;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [500, 500, 200]);
    assert_eq!(receiver.attempts(), 3);
    assert!(
        receiver
            .wait_for(|calls| !calls.is_empty(), Duration::from_secs(1))
            .await
    );
    let calls = receiver.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, "/weight");
    assert_eq!(calls[0].body["weight"], 5);
    assert!(
        calls[0]
            .headers
            .iter()
            .any(|(name, value)| name == "idempotency-key" && value == "abc")
    );
    Ok(())
}

#[tokio::test]
async fn demo_service_is_controlled_over_http_and_reports_health_per_track() -> TestResult {
    let service = DemoService::start("checkout-api", LOOPBACK.parse()?).await?;
    let base = format!("http://{}", service.addr());
    let client = reqwest::Client::new();

    let ready = client
        .get(format!("{base}/canary/health/ready"))
        .send()
        .await?;
    assert_eq!(ready.status(), 200);
    let degraded = Profile {
        healthy: false,
        error_rate: 0.3,
        ..Profile::default()
    };
    let put = client
        .put(format!("{base}/control/canary"))
        .json(&degraded)
        .send()
        .await?;
    assert_eq!(put.status(), 200);
    assert_eq!(service.profile(Track::Canary), degraded);
    assert_eq!(service.profile(Track::Baseline), Profile::default());
    let ready = client
        .get(format!("{base}/canary/health/ready"))
        .send()
        .await?;
    assert_eq!(ready.status(), 503);
    let baseline = client
        .get(format!("{base}/baseline/health/live"))
        .send()
        .await?;
    assert_eq!(baseline.status(), 200);

    let invalid = client
        .put(format!("{base}/control/canary"))
        .json(&serde_json::json!({ "error_rate": 2.0 }))
        .send()
        .await?;
    assert_eq!(invalid.status(), 400);
    let got: Profile = client
        .get(format!("{base}/control/canary"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(got, degraded);

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics
            .contains(r#"http_requests_total{service="checkout-api",track="canary",code="500"}"#)
    );
    service.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_missing_binary_says_how_to_install_it() {
    let result = PrometheusProcess::start(PrometheusOptions {
        binary: "/nonexistent/prometheus".into(),
        ..PrometheusOptions::default()
    })
    .await;
    let message = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        message,
        "prometheus not found on PATH: install it with `sudo apt-get install prometheus`"
    );
}
