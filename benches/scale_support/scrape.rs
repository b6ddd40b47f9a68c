//! A Prometheus's view of canaryd: its `/metrics` read every `every` (15 s by default, the
//! shortest usual scrape interval) from the start of the settle to the end of the window, so
//! the peak RSS the table reports includes what a scrape costs the daemon, as it does in
//! production. The bench's own two reads at the window's ends are not enough: at 10,000
//! rollouts the exposition is ~29 MB.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the scrapes saw.
#[derive(Debug, Default, Clone)]
pub struct ScrapeStats {
    pub every: Duration,
    pub scrapes: u32,
    pub failed: u32,
    /// Seconds from request to the last byte read, sorted.
    pub seconds: Vec<f64>,
    pub max_bytes: usize,
}

impl ScrapeStats {
    /// For the diagnostics line.
    pub fn line(&self) -> String {
        if self.every.is_zero() {
            return "/metrics scrapes: off".into();
        }
        let at = |q: f64| {
            let i = ((self.seconds.len() as f64 - 1.0) * q).round().max(0.0) as usize;
            self.seconds.get(i).copied().unwrap_or(f64::NAN)
        };
        format!(
            "/metrics scrapes: {} every {:?} ({} failed), time p50 {:.3} s max {:.3} s, {:.1} MB",
            self.scrapes,
            self.every,
            self.failed,
            at(0.5),
            at(1.0),
            self.max_bytes as f64 / 1e6
        )
    }
}

pub struct Scraper {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<ScrapeStats>>,
    every: Duration,
}

impl Scraper {
    /// Scrapes `url` every `every` until [`Scraper::finish`]; a zero `every` scrapes nothing.
    pub fn start(http: reqwest::Client, url: String, every: Duration) -> Scraper {
        let (stop, mut stopped) = watch::channel(false);
        let task = (!every.is_zero()).then(|| {
            tokio::spawn(async move {
                let mut stats = ScrapeStats {
                    every,
                    ..ScrapeStats::default()
                };
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopped.changed() => break,
                    }
                    let at = Instant::now();
                    // Read as a stream and counted, not kept: the bench's memory is not the
                    // daemon's, but it shares the machine.
                    match read_len(&http, &url).await {
                        Ok(n) => {
                            stats.seconds.push(at.elapsed().as_secs_f64());
                            stats.max_bytes = stats.max_bytes.max(n);
                            stats.scrapes += 1;
                        }
                        Err(_) => stats.failed += 1,
                    }
                }
                stats.seconds.sort_by(f64::total_cmp);
                stats
            })
        });
        Scraper { stop, task, every }
    }

    pub async fn finish(mut self) -> ScrapeStats {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(t) => t.await.unwrap_or_default(),
            None => ScrapeStats {
                every: self.every,
                ..ScrapeStats::default()
            },
        }
    }
}

async fn read_len(http: &reqwest::Client, url: &str) -> reqwest::Result<usize> {
    let mut response = http.get(url).send().await?.error_for_status()?;
    let mut n = 0;
    while let Some(chunk) = response.chunk().await? {
        n += chunk.len();
    }
    Ok(n)
}
