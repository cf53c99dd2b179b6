//! Node.js for the tests written in JavaScript (`js_client`, `browser`): what they need
//! installed, and `node --test` run to the end with every test passed and none skipped.

use std::path::Path;
use std::process::Command;

/// What is missing to run Node tests in `dir`: Node.js 20+ on PATH, and `dir`'s npm
/// `package` (installed by `setup`). Empty when nothing is.
pub fn missing(dir: &Path, package: &str, setup: &str) -> Vec<String> {
    let mut missing = Vec::new();
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let major: u32 = version
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major < 20 {
                missing.push(format!("Node.js {version} is too old: need 20 or newer"));
            }
        }
        _ => missing.push("`node` not found: Node.js 20 or newer is needed on PATH".into()),
    }
    if !dir.join("node_modules").join(package).exists() {
        missing.push(format!(
            "{} has no node_modules/{package}: run {setup}",
            dir.display()
        ));
    }
    missing
}

/// Panics naming what to install unless [`missing`] finds nothing.
pub fn require(dir: &Path, package: &str, setup: &str) {
    let missing = missing(dir, package, setup);
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// Runs `command` (a `node --test --test-reporter=tap ...`) and asserts that it passed
/// with no test skipped (a skip means the cluster's addresses did not reach it).
pub async fn run_tests(mut command: Command) {
    let output = tokio::task::spawn_blocking(move || command.output().expect("running node"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node --test failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("\n# fail 0") && stdout.contains("\n# skipped 0"),
        "{stdout}"
    );
}
