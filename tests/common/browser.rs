//! A real browser for the console's tests: chromedriver started on a free
//! port, driving a headless chromium through fantoccini, so what a page's
//! markup, its CSP and (later) its script do is seen as an operator's
//! browser sees it, not only as HTML text.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

use super::{eventually, free_port};

const CHROMEDRIVER: &str = "chromedriver";

/// chromedriver, running until dropped; in a process group of its own,
/// so the chromium it starts goes with it even when a test fails before
/// it closes its session.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Driver {
    /// chromedriver on a free port, once it answers; `None` (the test says
    /// it skips) when chromedriver is not installed.
    pub async fn start(test: &str) -> Option<Driver> {
        let port = free_port();
        let child = match Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                eprintln!(
                    "skipping {test}: {CHROMEDRIVER} not runnable ({e}); apt-get install chromium chromium-driver"
                );
                return None;
            }
        };
        let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
        let status = format!("{}/status", driver.url);
        let http = reqwest::Client::new();
        eventually("chromedriver to answer", async || {
            let reply = http.get(&status).send().await.map_err(|e| e.to_string())?;
            let body: serde_json::Value = reply.json().await.map_err(|e| e.to_string())?;
            match body["value"]["ready"] == json!(true) {
                true => Ok(()),
                false => Err(body.to_string()),
            }
        })
        .await;
        Some(driver)
    }

    /// A new headless chromium session.
    pub async fn session(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        let args =
            ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"];
        capabilities.insert("goog:chromeOptions".into(), json!({ "args": args }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector).capabilities(capabilities).connect(&self.url).await.expect("a chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}
