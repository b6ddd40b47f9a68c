//! An HTTP endpoint that records the hooks it receives.
//!
//! canaryd acts on the world only through hooks (`set_weight`, `promote`, `rollback`) and
//! Alertmanager only through webhooks. Tests assert on what was *received*, including retries:
//! the receiver can fail the next requests or answer slowly, and counts every attempt apart
//! from the calls it accepted. It can also answer with a redirect, to prove a caller does not
//! follow it. The demo prints each call as it arrives with [`HookReceiver::on_call`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::DemoError;

/// One request the receiver answered with 2xx.
#[derive(Clone, Debug)]
pub struct ReceivedCall {
    /// The request path, e.g. `/weight`.
    pub path: String,
    /// Every header, names in lower case, values lossily decoded.
    pub headers: Vec<(String, String)>,
    /// The JSON body; an empty body is `null`, one that is not JSON is kept as a JSON string.
    pub body: serde_json::Value,
    /// The body exactly as received, for checking a signature over it.
    pub raw: Vec<u8>,
    /// When the call was answered.
    pub at: SystemTime,
}

/// One request as received, whatever it was answered: retries of a failed delivery must carry
/// the same Idempotency-Key, so the failed ones are kept too.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The request path, e.g. `/rollback`.
    pub path: String,
    /// The `Idempotency-Key` header, if sent.
    pub idempotency_key: Option<String>,
    /// The status it was answered with.
    pub status: u16,
    /// When it arrived (before any delay): orders attempts as the caller sent them.
    pub arrived: SystemTime,
}

type Callback = Arc<dyn Fn(&ReceivedCall) + Send + Sync>;

#[derive(Default)]
struct Inner {
    calls: Vec<ReceivedCall>,
    attempts: usize,
    /// Paths of the requests received so far, in arrival order (answered or not yet).
    arrivals: Vec<String>,
    attempt_log: Vec<Attempt>,
    fail_next: u32,
    /// The status `fail_next` answers with (500 unless [`HookReceiver::fail_next_with`] said).
    fail_status: Option<StatusCode>,
    delay: Duration,
    /// Delays for single paths, over `delay`.
    path_delays: Vec<(String, Duration)>,
    redirect: Option<(StatusCode, String)>,
    callbacks: Vec<Callback>,
}

#[derive(Clone, Default)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    /// Woken on every recorded call, so [`HookReceiver::wait_for`] needs no polling interval.
    changed: Arc<Notify>,
}

impl Shared {
    /// Locks the state; the plain data inside stays consistent even if a callback panicked.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running hook receiver. Dropping it stops the server.
pub struct HookReceiver {
    addr: SocketAddr,
    shared: Shared,
    server: JoinHandle<()>,
}

impl HookReceiver {
    /// Starts a receiver on a free loopback port, accepting `POST` on any path.
    pub async fn start() -> Result<HookReceiver, DemoError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| DemoError::io("binding the hook receiver to 127.0.0.1", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| DemoError::io("reading the hook receiver's address", e))?;
        let shared = Shared::default();
        let app = Router::new().fallback(receive).with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "hook receiver stopped serving");
            }
        });
        Ok(HookReceiver {
            addr,
            shared,
            server,
        })
    }

    /// The URL of `path` on this receiver, e.g. `url("/weight")`.
    pub fn url(&self, path: &str) -> String {
        let path = path.strip_prefix('/').unwrap_or(path);
        format!("http://{}/{path}", self.addr)
    }

    /// Every call answered 2xx, in the order they were answered.
    pub fn calls(&self) -> Vec<ReceivedCall> {
        self.shared.lock().calls.clone()
    }

    /// Every request received, including those answered 5xx: retries show up here.
    pub fn attempts(&self) -> usize {
        self.shared.lock().attempts
    }

    /// Answers 500 to the next `n` requests, which are then not recorded in [`Self::calls`].
    pub fn fail_next(&self, n: u32) {
        let mut inner = self.shared.lock();
        inner.fail_next = n;
        inner.fail_status = None;
    }

    /// Like [`Self::fail_next`] with another status (e.g. 408, 429, 404), to tell which a
    /// caller retries; a status that is no 4xx/5xx error is refused.
    pub fn fail_next_with(&self, n: u32, status: u16) -> Result<(), DemoError> {
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .ok_or_else(|| DemoError::Unexpected(format!("{status} is no error status")))?;
        let mut inner = self.shared.lock();
        inner.fail_next = n;
        inner.fail_status = Some(status);
        Ok(())
    }

    /// How many requests to `path` arrived so far, including those not yet answered.
    pub fn arrived(&self, path: &str) -> usize {
        self.shared
            .lock()
            .arrivals
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    /// Every request received, in order, with its Idempotency-Key and the status it got.
    pub fn attempt_log(&self) -> Vec<Attempt> {
        self.shared.lock().attempt_log.clone()
    }

    /// Waits `d` before answering each later request, to make a caller's timeout fire. A call
    /// is recorded only once answered, so one whose caller gave up may still appear later.
    pub fn set_delay(&self, d: Duration) {
        self.shared.lock().delay = d;
    }

    /// Like [`Self::set_delay`] for requests to `path` only, so one hook can be slow while
    /// another answers at once.
    pub fn set_path_delay(&self, path: &str, d: Duration) {
        let mut inner = self.shared.lock();
        inner.path_delays.retain(|(p, _)| p != path);
        inner.path_delays.push((path.to_string(), d));
    }

    /// Answers every later request (any method) with `status` and `Location: location`,
    /// recording none of them as calls; `None` goes back to answering normally.
    pub fn redirect(&self, to: Option<(u16, &str)>) -> Result<(), DemoError> {
        let redirect = match to {
            None => None,
            Some((code, location)) => Some((
                StatusCode::from_u16(code)
                    .ok()
                    .filter(|s| s.is_redirection())
                    .ok_or_else(|| {
                        DemoError::Unexpected(format!("{code} is no redirect status"))
                    })?,
                location.to_string(),
            )),
        };
        self.shared.lock().redirect = redirect;
        Ok(())
    }

    /// Waits until `pred` holds for the calls so far, or `timeout` passes; returns whether it
    /// held.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&[ReceivedCall]) -> bool,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register for the wake-up before checking, so a call landing in between is seen.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if pred(&self.shared.lock().calls) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return pred(&self.shared.lock().calls);
            }
        }
    }

    /// Runs `f` on every call as it is recorded (after earlier callbacks).
    pub fn on_call(&self, f: impl Fn(&ReceivedCall) + Send + Sync + 'static) {
        self.shared.lock().callbacks.push(Arc::new(f));
    }
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let key = headers
        .get("idempotency-key")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let path = uri.path().to_owned();
    let arrived = SystemTime::now();
    let response = answer(shared.clone(), method, uri, headers, body).await;
    shared.lock().attempt_log.push(Attempt {
        path,
        idempotency_key: key,
        status: response.status().as_u16(),
        arrived,
    });
    shared.changed.notify_waiters();
    response
}

async fn answer(
    shared: Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let (fail, delay) = {
        let mut inner = shared.lock();
        inner.attempts += 1;
        inner.arrivals.push(uri.path().to_owned());
        if let Some((status, location)) = &inner.redirect {
            return (*status, [(axum::http::header::LOCATION, location.clone())]).into_response();
        }
        if method != Method::POST {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        let fail = (inner.fail_next > 0).then(|| {
            inner
                .fail_status
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        inner.fail_next = inner.fail_next.saturating_sub(1);
        let delay = inner
            .path_delays
            .iter()
            .find(|(p, _)| p == uri.path())
            .map_or(inner.delay, |(_, d)| *d);
        (fail, delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = fail {
        return (status, "failing as asked by fail_next").into_response();
    }
    let call = ReceivedCall {
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
        body: if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&body).into())
            })
        },
        raw: body.to_vec(),
        at: SystemTime::now(),
    };
    let callbacks = {
        let mut inner = shared.lock();
        inner.calls.push(call.clone());
        inner.callbacks.clone()
    };
    // Outside the lock: a callback may well call back into the receiver.
    for callback in callbacks {
        callback(&call);
    }
    shared.changed.notify_waiters();
    StatusCode::OK.into_response()
}
