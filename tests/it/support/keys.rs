//! Keys for tests, made by openssl: a self-signed TLS certificate for 127.0.0.1 and an
//! EC P-256 key pair for ES256 client tokens.

use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openssl {args:?}: {stderr}");
}

/// `cert` and `key` (paths relative to `dir`): a certificate for 127.0.0.1 and localhost,
/// not a CA (rustls refuses a CA certificate as a server's own).
pub fn certificate(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ]
        .iter()
        .chain(&["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .chain(&["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .chain(&["-addext", "basicConstraints=critical,CA:FALSE"])
        .chain(&["-keyout", key, "-out", cert])
        .copied()
        .collect::<Vec<_>>(),
    );
    (dir.join(cert), dir.join(key))
}

/// An ES256 key pair: `private` and `public` (PEM, relative to `dir`).
pub fn jwt_key_pair(dir: &Path, private: &str, public: &str) -> (PathBuf, PathBuf) {
    let curve = "ec_paramgen_curve:P-256";
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            curve,
            "-out",
            private,
        ],
    );
    openssl(dir, &["pkey", "-in", private, "-pubout", "-out", public]);
    (dir.join(private), dir.join(public))
}
