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
