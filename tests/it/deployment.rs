//! The production files in scripts/systemd/: the example config passes
//! `mrc check-config` (with its paths pointed at real files), and the unit files pass
//! `systemd-analyze verify` where systemd is installed (pointed at the built binaries).

use std::path::Path;
use std::process::Command;

const SYSTEMD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/systemd");

/// Writes a self-signed certificate, its key and a JWT public key under `dir` as the
/// example config names them (`/etc/mrc/...`).
fn files_for_the_example(dir: &Path) {
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    crate::support::keys::certificate(dir, "tls/cert.pem", "tls/key.pem");
    crate::support::keys::jwt_key_pair(dir, "jwt.pem", "jwt.pub.pem");
}

#[test]
fn the_example_config_passes_check_config() {
    let dir = tempfile::tempdir().unwrap();
    files_for_the_example(dir.path());
    let example = std::fs::read_to_string(format!("{SYSTEMD}/mrc.toml")).unwrap();
    let here = format!("{}/", dir.path().display());
    let config = dir.path().join("mrc.toml");
    std::fs::write(&config, example.replace("/etc/mrc/", &here)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mrc"))
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("replicas = \"3\"  # file"), "{stdout}");
    assert!(stdout.contains("tls-cert = "), "{stdout}");
}

#[test]
fn the_unit_files_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_mrc-gateway"))
        .parent()
        .unwrap();
    let mut units = Vec::new();
    for (template, instance) in [("mrc-center@", "c1"), ("mrc-gateway@", "gw-1")] {
        let text = std::fs::read_to_string(format!("{SYSTEMD}/{template}.service")).unwrap();
        let unit = dir.path().join(format!("{template}{instance}.service"));
        std::fs::write(&unit, text.replace("/usr/local/bin", bin.to_str().unwrap())).unwrap();
        units.push(unit);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
}
