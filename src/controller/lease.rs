//! The lease loop: keeps this replica's lease in the shared store, so one replica at a time
//! leads. The term, the fences and the backend it drives are the store's
//! ([`crate::store::leadership`]), because every store write checks them.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::store::leadership::{Leadership, LeaseBackend, LeaseTiming};

/// Keeps this replica's lease: acquires when it can, renews while it leads, steps down when a
/// renewal is refused or the term ran out without one. `on_change` hears every gain (with the
/// new epoch) and loss (`None`); it resumes or stops the rollout tasks. When `stop` turns true
/// (a graceful shutdown, after the tasks stopped) it hands the lease back and returns.
pub async fn run(
    backend: Arc<dyn LeaseBackend>,
    leadership: Leadership,
    holder: String,
    url: String,
    timing: LeaseTiming,
    on_change: impl Fn(Option<u64>) + Send + 'static,
    mut stop: watch::Receiver<bool>,
) {
    let mut held: Option<u64> = None;
    let mut changes = leadership.subscribe();
    loop {
        // A fenced write may have ended the term between two rounds.
        if let Some(epoch) = held
            && leadership.epoch() != Some(epoch)
        {
            tracing::warn!(
                event = "leader.lost",
                epoch,
                "term ended (expired without renewal or a write was fenced); following"
            );
            leadership.step_down(epoch);
            held = None;
            record(false, true);
            on_change(None);
        }
        let sent = Instant::now();
        let (b, h, u) = (backend.clone(), holder.clone(), url.clone());
        let outcome = tokio::task::spawn_blocking(move || match held {
            Some(epoch) => b
                .renew(&h, epoch, timing.lease)
                .map(|ok| ok.then_some(epoch).ok_or(None)),
            None => b.acquire(&h, &u, timing.lease),
        })
        .await
        .unwrap_or_else(|e| Err(format!("lease task failed: {e}")));
        match outcome {
            Ok(Ok(epoch)) => {
                leadership.grant(epoch, sent + timing.lease);
                leadership.set_leader_url(Some(url.clone()));
                if held != Some(epoch) {
                    tracing::info!(event = "leader.elected", epoch, holder = %holder, "this replica leads");
                    held = Some(epoch);
                    record(true, true);
                    on_change(Some(epoch));
                }
            }
            Ok(Err(other)) => {
                leadership.set_leader_url(other);
                if let Some(epoch) = held.take() {
                    tracing::warn!(
                        event = "leader.lost",
                        epoch,
                        "lease taken by another replica; following"
                    );
                    leadership.step_down(epoch);
                    record(false, true);
                    on_change(None);
                } else {
                    record(false, false);
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::redact::text(&e), leading = held.is_some(), "lease not renewed or acquired");
            }
        }
        let mut wake = Instant::now().max(sent + timing.renew_interval);
        if let Some(until) = leadership.subscribe().borrow().and_then(|t| t.until) {
            wake = wake.min(until.max(Instant::now()));
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = changes.changed() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            if let Some(epoch) = held {
                leadership.step_down(epoch);
                record(false, true);
                let b = backend.clone();
                let h = holder.clone();
                match tokio::task::spawn_blocking(move || b.release(&h, epoch)).await {
                    Ok(Ok(())) => {
                        tracing::info!(event = "leader.released", epoch, "lease handed back")
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(epoch, error = %crate::redact::text(&e), "lease not handed back; it expires by itself")
                    }
                    Err(e) => {
                        tracing::warn!(epoch, error = %e, "lease not handed back; it expires by itself")
                    }
                }
            }
            return;
        }
    }
}

fn record(leader: bool, changed: bool) {
    metrics::gauge!("canaryd_leader").set(if leader { 1.0 } else { 0.0 });
    if changed {
        metrics::counter!("canaryd_leader_changes_total").increment(1);
    }
}
