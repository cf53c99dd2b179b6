//! The demo page (`mrc-gateway --demo`): served only with the flag, and used in a real
//! headless Chromium by `tests/browser/demo.test.js` (Node with puppeteer-core) on two
//! gateways. Chromium comes from the machine (`scripts/setup.sh --browser` installs
//! Debian's); where it is missing the browser test is skipped, unless
//! `MRC_BROWSER_TESTS=1` (CI) requires it. `MRC_CHROMIUM` names another browser binary.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use reqwest::header::CONTENT_TYPE;

use crate::support::cluster::Cluster;
use crate::support::node;

const CHROMIUM: &str = "/usr/bin/chromium";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// `GET url`: its status, content type and body.
async fn get(url: String) -> (u16, String, String) {
    let response = reqwest::get(&url).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn demo_page_and_client_modules_are_served_only_with_the_demo_flag() {
    let mut cluster = Cluster::start(1, 1);
    cluster.gateway_args = vec!["--demo".into()];
    cluster.start_gateway("g1");
    let (plain, demo) = (&cluster.gateways[0].http, &cluster.gateways[1].http);

    assert_eq!(get(format!("{plain}/")).await.0, 404);
    assert_eq!(get(format!("{plain}/demo/client/index.js")).await.0, 404);

    let (status, content_type, html) = get(format!("{demo}/")).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/html; charset=utf-8")
    );
    assert!(
        html.contains(r#"<script type="module" src="/demo/demo.js">"#),
        "{html}"
    );

    let (status, content_type, script) = get(format!("{demo}/demo/demo.js")).await;
    assert_eq!((status, content_type.as_str()), (200, JAVASCRIPT));
    assert!(script.contains("from './client/index.js'"), "{script}");

    // The client's own file, byte for byte: the page uses the client its tests cover.
    let (status, content_type, client) = get(format!("{demo}/demo/client/client.js")).await;
    assert_eq!((status, content_type.as_str()), (200, JAVASCRIPT));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js/src/client.js");
    assert_eq!(client, std::fs::read_to_string(source).unwrap());
    assert_eq!(get(format!("{demo}/demo/client/index.d.ts")).await.0, 404);
}

/// Whether the browser test can run here. Where something is missing it is skipped
/// (printing why) when Chromium is not installed and the test is not required
/// (`MRC_BROWSER_TESTS=1`); otherwise it fails naming all that is missing.
fn browser_available(dir: &Path, chromium: &str) -> bool {
    let mut missing = node::missing(dir, "puppeteer-core", "scripts/setup.sh --browser");
    let no_chromium = !Path::new(chromium).is_file();
    if no_chromium {
        missing.push(format!(
            "{chromium} not found: install Chromium (scripts/setup.sh --browser)"
        ));
    }
    let required = std::env::var("MRC_BROWSER_TESTS").is_ok_and(|v| v == "1");
    if no_chromium && !required {
        // Straight to stderr: libtest would swallow a println! of a test that passes.
        let _ = writeln!(
            std::io::stderr(),
            "browser test skipped: {} (MRC_BROWSER_TESTS=1 requires it)",
            missing.join("; ")
        );
        return false;
    }
    assert!(
        missing.is_empty(),
        "the browser test cannot run:\n{}",
        missing.join("\n")
    );
    true
}

#[tokio::test]
async fn two_users_chat_through_the_demo_page_in_headless_chromium() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("MRC_CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_string());
    if !browser_available(&dir, &chromium) {
        return;
    }
    // Two centers and two gateways with dev auth (the cluster's default) and the page.
    let cluster = Cluster::start_with(2, 2, &["--demo"]);
    let screenshot = screenshot_path();
    let _ = std::fs::remove_file(&screenshot);
    println!("screenshot: {}", screenshot.display());

    let mut command = Command::new("node");
    command
        .args(["--test", "--test-reporter=tap", "demo.test.js"])
        .current_dir(&dir)
        .env("MRC_CHROMIUM", &chromium)
        .env("MRC_SCREENSHOT", &screenshot);
    for (i, gateway) in cluster.gateways.iter().enumerate() {
        command.env(format!("MRC_DEMO_{i}"), format!("{}/", gateway.http));
    }
    let started = Instant::now();
    node::run_tests(command).await;
    println!("the browser test took {:?}", started.elapsed());
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
}

/// `<target>/browser/demo.png`, kept after the test to look at (CI can upload it).
fn screenshot_path() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("browser/demo.png")
}
