//! The web view's live feed (`GET /events`) on a real daemon: it carries the id of each rollout
//! that changes, and it is bounded — past `web::MAX_FEEDS` open feeds the next is refused until
//! one closes.

use crate::common;

use std::time::{Duration, Instant};

use canaryd::web::MAX_FEEDS;
use common::{RuleOpts, Stack};

async fn open_feed(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{url}/events"))
        .send()
        .await
        .expect("feed request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_names_each_changed_rollout_and_is_bounded() {
    let s = Stack::start("feed", RuleOpts::default()).await;
    let url = s.daemon.url.clone();
    let mut first = open_feed(&url).await;
    assert_eq!(first.status(), 200);
    let content_type = first
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );

    let id = s.daemon.start_rollout("feed", "v1.0.0").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = String::new();
    while !seen.contains(&format!("event: update\ndata: {id}\n")) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no update for {id} on the feed: {seen:?}");
        if let Ok(Ok(Some(chunk))) = tokio::time::timeout(left, first.chunk()).await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    let mut open = vec![first];
    while open.len() < MAX_FEEDS {
        let f = open_feed(&url).await;
        assert_eq!(f.status(), 200, "feed {} of {MAX_FEEDS}", open.len() + 1);
        open.push(f);
    }
    assert_eq!(open_feed(&url).await.status(), 503, "one feed too many");
    drop(open.pop());
    // The server sees the closed connection when it next writes to it (an update or the
    // keep-alive): poll until a slot is free.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let f = open_feed(&url).await;
        if f.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed feed's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
