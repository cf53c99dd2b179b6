//! What the gateway shows the web: TLS on its HTTP listener (HTTPS and WSS), the
//! `Origin` check before a WebSocket upgrade, and CORS on the HTTP API.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::cluster::Cluster;

/// A self-signed certificate for 127.0.0.1 and its key, written into `dir`.
fn certificate(dir: &Path) -> (String, String) {
    let (cert, key) = crate::support::keys::certificate(dir, "cert.pem", "key.pem");
    let path = |p: &Path| p.to_str().unwrap().to_string();
    (path(&cert), path(&key))
}

/// A TLS connection to `addr` trusting only `cert`.
async fn tls(addr: &str, cert: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).unwrap())
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("a TLS handshake")
}

#[tokio::test]
async fn the_listener_serves_https_and_wss_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let cluster = Cluster::start_with(1, 1, &["--tls-cert", &cert, "--tls-key", &key]);
    let ws = cluster.ws(0).to_string();
    let addr = ws
        .strip_prefix("wss://")
        .expect("a wss URL")
        .trim_end_matches("/ws");

    let mut https = tls(addr, &cert).await;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    https.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    https.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let stream = tls(addr, &cert).await;
    let (mut socket, _) = tokio_tungstenite::client_async(ws.as_str(), stream)
        .await
        .unwrap();
    use futures::{SinkExt as _, StreamExt as _};
    let login = r#"{"op":"login","user":"alice"}"#;
    socket.send(login.into()).await.unwrap();
    let welcome = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
    let text = welcome.unwrap().unwrap().unwrap().into_text().unwrap();
    assert!(text.contains(r#""op":"welcome""#), "{text}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut got)).await;
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"));
}

#[test]
fn a_certificate_that_does_not_load_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mrc-gateway"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--insecure-dev-auth",
            "--tls-cert",
        ])
        .arg(&junk)
        .arg("--tls-key")
        .arg(&junk)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("junk.pem"),
        "the error names the file:\n{stderr}"
    );
}

/// The status of a WebSocket upgrade to `ws` sent with `origin` (if any).
async fn upgrade_status(ws: &str, origin: Option<&str>) -> u16 {
    let mut request = ws.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn pages_of_other_origins_cannot_open_a_websocket() {
    let cluster = Cluster::start_with(1, 1, &["--allowed-origins", "https://chat.example.com"]);
    let ws = cluster.ws(0);
    assert_eq!(upgrade_status(ws, Some("https://evil.example")).await, 403);
    assert_eq!(
        upgrade_status(ws, Some("https://chat.example.com")).await,
        101
    );
    assert_eq!(
        upgrade_status(ws, None).await,
        101,
        "not a browser: no Origin"
    );
}

#[tokio::test]
async fn a_request_for_the_websocket_that_is_no_upgrade_gets_a_bad_frame_error() {
    let cluster = Cluster::start(1, 1);
    let ws = cluster.ws(0).replacen("ws://", "http://", 1);
    let response = crate::support::http().get(&ws).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "bad_frame", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("not a WebSocket upgrade"), "{message}");
}

/// A CORS preflight for `POST /v1/messages` from `origin`: status and allowed origin.
async fn preflight(http: &str, origin: &str) -> (u16, Option<String>) {
    let response = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{http}/v1/messages"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    let allowed = response.headers().get("access-control-allow-origin");
    let allowed = allowed.map(|v| v.to_str().unwrap().to_string());
    (response.status().as_u16(), allowed)
}

#[tokio::test]
async fn the_api_answers_cors_for_the_configured_origins_only() {
    let app = "https://app.example";
    let cors = Cluster::start_with(1, 1, &["--cors-origins", app, "--api-key", "k"]);
    let http = &cors.gateways[0].http;
    assert_eq!(preflight(http, app).await, (200, Some(app.to_string())));
    assert_eq!(preflight(http, "https://evil.example").await.1, None);
    let sent = reqwest::Client::new()
        .post(format!("{http}/v1/messages"))
        .header("origin", app)
        .bearer_auth("k")
        .body(r#"{"to":["bob"],"body":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    assert_eq!(sent.headers()["access-control-allow-origin"], app);

    let plain = Cluster::start_with(1, 1, &[]);
    assert_eq!(
        preflight(&plain.gateways[0].http, app).await.1,
        None,
        "no CORS by default"
    );
}
