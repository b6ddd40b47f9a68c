//! A headless Chromium session for the web view's tests, driven through chromedriver
//! (WebDriver) with `fantoccini`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium session with a fresh profile; chromedriver and its browsers are killed on
/// drop.
pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        let (driver, url) = start_driver().await;
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1100,1400",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::rustls()
            .expect("rustls connector")
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("WebDriver session");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Runs `js` (a function body returning a value) until it returns something truthy.
    pub async fn wait_js(&self, what: &str, js: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.client.execute(js, vec![]).await.expect("script runs");
            if !(v.is_null() || v == json!(false) || v == json!("")) {
                return v;
            }
            if Instant::now() > deadline {
                let page = self.client.source().await.unwrap_or_default();
                panic!("{what}: not seen within {timeout:?}; page:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Read in one script: the live part is replaced on every update, so an element found by one
    /// WebDriver call may be gone by the next.
    pub async fn text_of(&self, css: &str) -> String {
        let v = self
            .client
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
                vec![json!(css)],
            )
            .await
            .expect("script");
        v.as_str()
            .unwrap_or_else(|| panic!("{css}: not on the page"))
            .to_string()
    }

    /// Clicks `css`, finding it again when a live refresh replaced it between find and click.
    pub async fn click(&self, css: &str) {
        let mut last = None;
        for _ in 0..20 {
            let found = self.client.find(Locator::Css(css)).await;
            match found {
                Ok(e) => match e.click().await {
                    Ok(()) => return,
                    Err(err) => last = Some(err.to_string()),
                },
                Err(err) => last = Some(err.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cannot click {css}: {last:?}");
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.expect(css);
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    pub async fn phase_shown(&self) -> String {
        let v = self
            .client
            .execute(
                "const l = document.getElementById('live'); return l ? l.dataset.phase : '';",
                vec![],
            )
            .await
            .expect("script");
        v.as_str().unwrap_or_default().to_string()
    }
}

/// chromedriver leads its own process group: killing it alone left every Chromium it started
/// running, orphaned, after the test.
impl Drop for Browser {
    fn drop(&mut self) {
        canaryd::demo::kill_group(&self.driver);
    }
}

/// Starts chromedriver on a free port and waits until it answers; a new port is tried when the
/// driver exited (another process took the port between its choice and the driver's bind).
/// The driver must still run after it answered, so a foreign server on the port never counts.
async fn start_driver() -> (tokio::process::Child, String) {
    let http = reqwest::Client::new();
    for _ in 0..5 {
        let port = canaryd::demo::free_loopback_port().expect("free port");
        let mut driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .expect("chromedriver (scripts/setup.sh installs chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = driver.try_wait() {
                break;
            }
            let answered = http.get(format!("{url}/status")).send().await.is_ok();
            if answered && matches!(driver.try_wait(), Ok(None)) {
                return (driver, url);
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("chromedriver found no free port in 5 tries");
}
