//! The config file (`--config`, `MRC_CONFIG`) and checking a configuration
//! (`--check-config`, `mrc check-config`): keys are the long flag names; flags and
//! `MRC_*` variables win over the file; anything wrong exits 64.

use std::process::{Command, Output};

use crate::support::cluster::Cluster;

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("mrc.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        .env_remove("MRC_NATS_URL")
        .output()
        .expect("running the binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn mrc_check_config_prints_each_process_s_effective_settings() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "request-timeout-ms = 2000\n[center]\nreplicas = 1\n[gateway]\nlisten = \"127.0.0.1:9090\"\napi-key = \"secret\"\ninsecure-dev-auth = true\nallowed-origins = [\"https://a.example\", \"https://b.example\"]\n",
    );
    let out = run(env!("CARGO_BIN_EXE_mrc"), &["check-config", &file]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for line in [
        "[center]",
        "replicas = \"1\"  # file",
        "[gateway]",
        "listen = \"127.0.0.1:9090\"  # file",
        "request-timeout-ms = \"2000\"  # file",
        "allowed-origins = \"https://a.example,https://b.example\"  # file",
        "api-key = \"<hidden>\"  # file",
        "rate-per-sec = \"100\"  # default",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("secret"));
}

#[test]
fn unknown_keys_and_bad_values_exit_64_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let typo = write(&dir, "[gateway]\nlisten_addr = \"x\"\n");
    let out = run(env!("CARGO_BIN_EXE_mrc"), &["check-config", &typo]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("listen_addr"),
        "{}",
        text(&out.stderr)
    );

    let bad = write(&dir, "max-connections = \"many\"\n");
    let gateway = env!("CARGO_BIN_EXE_mrc-gateway");
    let out = run(gateway, &["--config", &bad, "--check-config"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("--max-connections"),
        "{}",
        text(&out.stderr)
    );
    let out = run(gateway, &["--check-config", "--max-connections", "0"]);
    assert_eq!(out.status.code(), Some(64), "validation runs too");
}

#[tokio::test]
async fn a_gateway_takes_its_settings_from_the_file_and_flags_and_env_win() {
    let dir = tempfile::tempdir().unwrap();
    // The file names an id and a NATS URL nobody listens on: the test's `--id` flag and
    // its MRC_NATS_URL variable must win; `offline` comes from the file.
    let file = write(
        &dir,
        "nats-url = \"nats://127.0.0.1:1\"\n[gateway]\nid = \"from-file\"\noffline = \"store\"\n",
    );
    let mut cluster = Cluster::start(1, 0);
    cluster.gateway_args = vec!["--config".into(), file];
    cluster.start_gateway("g0");
    let log = cluster.gateways[0].process.log();
    assert!(log.contains("id=g0"), "{log}");
    let mut alice = crate::support::client::login(cluster.ws(0), "alice").await;
    let (report, _) = crate::support::client::send(&mut alice, &["bob"], "m1", "1").await;
    let stored = mrc::protocol::code::Outcome::Stored;
    assert_eq!(report["bob"], stored, "offline = store from the file");
}

/// Whether `token` logs in on `ws`.
async fn logs_in(ws: &str, token: &str) -> bool {
    let mut client = crate::support::client::connect(ws).await;
    client.login_with_token(token).await.is_ok()
}

#[tokio::test]
async fn sighup_reloads_the_jwt_keys_and_never_kills() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        "old-secret-0123456789abcdef-0123456789",
        "new-secret-0123456789abcdef-0123456789",
    );
    let file = write(&dir, &format!("[gateway]\njwt-secret = \"{old}\"\n"));
    let mut cluster = Cluster::start(1, 0);
    cluster.dev_auth = false;
    cluster.gateway_args = vec!["--config".into(), file.clone()];
    cluster.start_gateway("g0");
    let claims = crate::support::token::claims("alice", serde_json::json!({}));
    let sign = |secret: &str| {
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    let ws = cluster.ws(0).to_string();
    assert!(logs_in(&ws, &sign(old)).await);

    write(&dir, &format!("[gateway]\njwt-secret = \"{new}\"\n"));
    let gateway = &mut cluster.gateways[0].process;
    gateway.hangup();
    gateway.wait_line("configuration reloaded", std::time::Duration::from_secs(10));
    assert!(!logs_in(&ws, &sign(old)).await, "the old key is gone");
    assert!(logs_in(&ws, &sign(new)).await);

    // A file that no longer validates is refused; the running keys stay.
    write(&dir, "[gateway]\njwt-secret = \"short\"\n");
    gateway.hangup();
    gateway.wait_line("not reloaded", std::time::Duration::from_secs(10));
    assert!(gateway.running());
    assert!(logs_in(&ws, &sign(new)).await);

    let center = &mut cluster.centers[0].process;
    center.hangup();
    center.wait_line("log filter reloaded", std::time::Duration::from_secs(10));
    assert!(center.running());
}
