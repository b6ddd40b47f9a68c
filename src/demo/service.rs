//! A simulated web API with a baseline and a canary track, for Prometheus to scrape.
//!
//! canaryd judges a canary by comparing two label sets of the same metrics. This service exposes
//! both tracks at `/metrics` (labels `service` and `track`), lets a test or the demo change how
//! each track behaves while it runs — from Rust ([`DemoService::update`]) or from another process
//! (`PUT /control/{track}`) — and answers per-track health probes. The counters advance in a
//! background task owned by the service, every 100 ms; see [`super::simulation`] for the maths.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::DemoError;
pub use super::simulation::Profile;
use super::simulation::{Counters, render};

/// The variable that fixes the seed of [`DemoService::start`].
pub const SEED_ENV: &str = "CANARYD_DEMO_SEED";

/// How often the counters advance.
const TICK: Duration = Duration::from_millis(100);

/// One of the two deployments of the simulated service; the value of the `track` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Track {
    /// The version in production.
    Baseline,
    /// The version being rolled out.
    Canary,
}

impl Track {
    /// The label value, as in `track="canary"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Baseline => "baseline",
            Track::Canary => "canary",
        }
    }
}

#[derive(Default)]
struct TrackState {
    profile: Profile,
    counters: Counters,
}

struct Inner {
    service: String,
    baseline: TrackState,
    canary: TrackState,
    /// Tracks served at `/metrics`; both by default, one when baseline and canary run as
    /// separate processes (docker-compose.yml), so neither series is exported twice.
    exported: Vec<Track>,
    /// `/metrics` answers 503: the scrape fails as it does when a target is down.
    scrapes_fail: bool,
}

impl Inner {
    fn track(&mut self, track: Track) -> &mut TrackState {
        match track {
            Track::Baseline => &mut self.baseline,
            Track::Canary => &mut self.canary,
        }
    }
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    /// Locks the state; a panic elsewhere while holding the lock cannot leave the plain numbers
    /// inside in a state worse than one tick stale, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running simulated service. Dropping it stops its server and its ticker.
pub struct DemoService {
    addr: SocketAddr,
    seed: u64,
    shared: Shared,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl DemoService {
    /// Starts the service on `listen` (`127.0.0.1:0` picks a free port) with both tracks on
    /// [`Profile::default`], the noise seeded by `CANARYD_DEMO_SEED` when set (a run replayed)
    /// and at random otherwise; [`DemoService::seed`] says which, for a failing test to print.
    pub async fn start(service: &str, listen: SocketAddr) -> Result<DemoService, DemoError> {
        let seed = match std::env::var(SEED_ENV) {
            Ok(s) => s.trim().parse().map_err(|e| {
                DemoError::Unexpected(format!("{SEED_ENV}={s:?} is no unsigned integer: {e}"))
            })?,
            Err(_) => rand::random(),
        };
        DemoService::start_with_seed(service, listen, seed).await
    }

    /// The seed of this service's noise and counts.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Like [`DemoService::start`], with the noise RNG seeded by `seed` so a noisy run can be
    /// reproduced.
    pub async fn start_with_seed(
        service: &str,
        listen: SocketAddr,
        seed: u64,
    ) -> Result<DemoService, DemoError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| DemoError::io(format!("binding the demo service to {listen}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| DemoError::io("reading the demo service's address", e))?;
        let shared = Shared(Arc::new(Mutex::new(Inner {
            service: service.to_owned(),
            baseline: TrackState::default(),
            canary: TrackState::default(),
            exported: vec![Track::Baseline, Track::Canary],
            scrapes_fail: false,
        })));
        let (stop, stopped) = watch::channel(false);

        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/{track}/health/ready", get(ready))
            .route("/{track}/health/live", get(live))
            .route("/control/{track}", get(get_profile).put(put_profile))
            .with_state(shared.clone());
        let mut server_stop = stopped.clone();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "demo service stopped serving");
            }
        });
        let ticker = tokio::spawn(tick(shared.clone(), stopped, seed));
        Ok(DemoService {
            addr,
            seed,
            shared,
            stop,
            tasks: vec![server, ticker],
        })
    }

    /// The address the service listens on; scrape `http://{addr}/metrics`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves only `track`'s series at `/metrics`.
    pub fn export_only(&self, track: Track) {
        self.export(&[track]);
    }

    /// Serves exactly `tracks`' series at `/metrics`: a track left out stops exporting, as a
    /// crash-looping pod or a broken exporter does, while its counters keep running.
    pub fn export(&self, tracks: &[Track]) {
        self.shared.lock().exported = tracks.to_vec();
    }

    /// Makes every scrape of `/metrics` fail (503) or succeed again: the target is down.
    pub fn fail_scrapes(&self, fail: bool) {
        self.shared.lock().scrapes_fail = fail;
    }

    /// The current profile of `track`.
    pub fn profile(&self, track: Track) -> Profile {
        self.shared.lock().track(track).profile
    }

    /// Replaces the profile of `track`; the next tick uses it.
    pub fn set_profile(&self, track: Track, profile: Profile) {
        self.shared.lock().track(track).profile = profile;
    }

    /// Changes the profile of `track` in place, e.g. `update(Track::Canary, |p| p.error_rate = 0.2)`.
    pub fn update(&self, track: Track, f: impl FnOnce(&mut Profile)) {
        f(&mut self.shared.lock().track(track).profile);
    }

    /// Stops serving and ticking, and waits until both have finished.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for DemoService {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Advances both tracks every [`TICK`] by the time that really passed, so that rates stay right
/// even when a loaded machine delays a tick.
async fn tick(shared: Shared, mut stopped: watch::Receiver<bool>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let now = tokio::time::Instant::now();
        let dt = now.duration_since(last).as_secs_f64();
        last = now;
        let mut inner = shared.lock();
        for track in [Track::Baseline, Track::Canary] {
            let state = inner.track(track);
            let profile = state.profile;
            state.counters.advance(&profile, dt, &mut rng);
        }
    }
}

async fn metrics(State(shared): State<Shared>) -> axum::response::Response {
    let inner = shared.lock();
    if inner.scrapes_fail {
        return (StatusCode::SERVICE_UNAVAILABLE, "target down\n").into_response();
    }
    let tracks: Vec<(&str, &Counters)> = [
        (Track::Baseline, &inner.baseline.counters),
        (Track::Canary, &inner.canary.counters),
    ]
    .into_iter()
    .filter(|(t, _)| inner.exported.contains(t))
    .map(|(t, c)| (t.as_str(), c))
    .collect();
    let body = render(&inner.service, &tracks);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn ready(State(shared): State<Shared>, Path(track): Path<Track>) -> impl IntoResponse {
    if shared.lock().track(track).profile.healthy {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "track": track })),
        )
    }
}

/// Liveness follows `healthy` too: a simulated track has no process to restart, and a probe
/// on either endpoint should see the degradation a test asked for.
async fn live(State(shared): State<Shared>, Path(track): Path<Track>) -> impl IntoResponse {
    if shared.lock().track(track).profile.healthy {
        (StatusCode::OK, Json(json!({ "status": "live" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "track": track })),
        )
    }
}

async fn get_profile(State(shared): State<Shared>, Path(track): Path<Track>) -> Json<Profile> {
    Json(shared.lock().track(track).profile)
}

/// Replaces a track's profile; fields left out take their healthy defaults.
async fn put_profile(
    State(shared): State<Shared>,
    Path(track): Path<Track>,
    Json(profile): Json<Profile>,
) -> axum::response::Response {
    if let Err(message) = profile.validate() {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response();
    }
    shared.lock().track(track).profile = profile;
    Json(profile).into_response()
}
