//! The API as `serve` builds it, once per fuzzing process: one rule with alert matchers, an
//! in-memory store, and hooks and Prometheus on a closed loopback port (nothing leaves the
//! machine; a started rollout's hooks fail fast).

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use canaryd::actions::HookRunner;
use canaryd::controller::report::ReportBook;
use canaryd::api::AppState;
use canaryd::controller::Controller;
use canaryd::store::MemoryStore;
use canaryd::rules::parse_rule;
use canaryd::source::{PrometheusConfig, PrometheusSource};
use tower::ServiceExt as _;

const RULE: &str = r#"name: fuzz
selector:
  canary: 'service="api", track="canary"'
  baseline: 'service="api", track="baseline"'
steps:
  - { weight: 5, hold: 1h }
  - { weight: 100 }
analysis: { interval: 1h }
metrics:
  - name: error_rate
    query: 'sum(rate(http_requests_total{ {{selector}}, code=~"5.." }[1m]))'
    rollback_above: 0.05
alerts:
  rollback_on: ['alertname="CanaryErrors", service=~"api|web"']
  pause_on: ['alertname="Maintenance"']
hooks:
  set_weight: { url: "http://127.0.0.1:9/weight", timeout: 1s, retries: 0 }
  rollback: { url: "http://127.0.0.1:9/rollback", timeout: 1s, retries: 0 }
"#;

pub struct App {
    runtime: tokio::runtime::Runtime,
    router: Router,
}

impl App {
    pub fn block_on(&self, request: Request<Body>) -> StatusCode {
        self.runtime.block_on(async {
            self.router
                .clone()
                .oneshot(request)
                .await
                .map(|r| r.status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        })
    }
}

pub fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let router = runtime.block_on(async {
            let rule = parse_rule(Path::new("fuzz.yaml"), RULE).expect("fuzz rule");
            let source = PrometheusSource::new(&PrometheusConfig {
                url: "http://127.0.0.1:9".into(),
                timeout: Duration::from_secs(1),
                bearer_token: None,
                basic_auth: None,
            })
            .expect("source");
            let controller = Controller::new(
                [("fuzz".to_string(), Arc::new(rule))].into_iter().collect(),
                Arc::new(MemoryStore::default()),
                source,
                HookRunner::new().expect("hooks"),
            );
            canaryd::web::app(AppState {
                controller,
                metrics: None,
                api_token: None,
                api_tokens: Default::default(),
                reports: ReportBook::new(None),
            })
        });
        App { runtime, router }
    })
}
