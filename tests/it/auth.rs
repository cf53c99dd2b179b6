//! Client authentication: JWTs with HS256, RS256 and ES256, and what is refused.

use mrc::client::WsClient;
use mrc::protocol::code::ErrorCode;
use serde_json::json;

use crate::support::client::{connect, expect_op};
use crate::support::cluster::Cluster;
use crate::support::token::{self, at, claims};

/// One center and one gateway that accepts only tokens, with the given key flags.
fn cluster(key_args: &[&str]) -> Cluster {
    let mut cluster = Cluster::start(1, 0);
    cluster.dev_auth = false;
    cluster.set_gateway_args(key_args);
    cluster.start_gateway("g0");
    cluster
}

/// Logs in with `token` and expects an `unauthorized` error, a `bye` and the close.
async fn expect_refused(url: &str, token: &str) {
    let mut ws = connect(url).await;
    ws.send_text(&json!({"op": "login", "token": token}).to_string())
        .await
        .unwrap();
    let error = expect_op(&mut ws, "error").await;
    assert_eq!(
        error.frame.code,
        Some(ErrorCode::Unauthorized),
        "{}",
        error.text
    );
    let bye = expect_op(&mut ws, "bye").await;
    assert_eq!(bye.frame.reason.as_deref(), Some("unauthorized"));
    assert!(
        ws.next().await.unwrap().is_none(),
        "the connection closes after a refused login"
    );
}

#[tokio::test]
async fn hs256_tokens_log_in_and_bad_ones_are_refused_and_disconnected() {
    let cluster = cluster(&["--jwt-secret", token::SECRET]);
    let url = cluster.ws(0);
    let mut ws = connect(url).await;
    let welcome = ws
        .login_with_token(&token::hs256(&claims("张伟", json!({}))))
        .await
        .unwrap();
    assert_eq!(welcome.user.as_deref(), Some("张伟"));

    expect_refused(url, &token::hs256(&claims("a", json!({"exp": at(-3600)})))).await;
    expect_refused(url, &token::hs256(&claims("a", json!({"nbf": at(3600)})))).await;
    expect_refused(url, &token::unsigned(&claims("a", json!({})))).await;
    expect_refused(url, &token::rs256(&claims("a", json!({})))).await;
    expect_refused(url, "not.a.token").await;

    // Without --insecure-dev-auth a bare user id is not a credential.
    let mut ws = connect(url).await;
    ws.send_text(r#"{"op":"login","user":"alice"}"#)
        .await
        .unwrap();
    assert_eq!(
        expect_op(&mut ws, "error").await.frame.code,
        Some(ErrorCode::Unauthorized)
    );
    // A token and a different user id do not mix.
    let mut ws = connect(url).await;
    let t = token::hs256(&claims("bob", json!({})));
    ws.send_text(&json!({"op": "login", "token": t, "user": "alice"}).to_string())
        .await
        .unwrap();
    assert_eq!(
        expect_op(&mut ws, "error").await.frame.code,
        Some(ErrorCode::Unauthorized)
    );
}

#[tokio::test]
async fn rs256_and_es256_keys_verify_tokens_and_algorithm_confusion_is_refused() {
    let rsa = token::key_path("rsa-public.pem");
    let cluster = cluster(&["--jwt-public-key", &rsa]);
    let mut ws = connect(cluster.ws(0)).await;
    let welcome = ws
        .login_with_token(&token::rs256(&claims("alice", json!({}))))
        .await
        .unwrap();
    assert_eq!(welcome.user.as_deref(), Some("alice"));
    expect_refused(cluster.ws(0), &token::confused(&claims("alice", json!({})))).await;
    expect_refused(cluster.ws(0), &token::es256(&claims("alice", json!({})))).await;

    let ec = token::key_path("ec-public.pem");
    let cluster = self::cluster(&["--jwt-public-key", &ec]);
    let mut ws = connect(cluster.ws(0)).await;
    let welcome = ws
        .login_with_token(&token::es256(&claims("bob", json!({}))))
        .await
        .unwrap();
    assert_eq!(welcome.user.as_deref(), Some("bob"));
    expect_refused(cluster.ws(0), &token::hs256(&claims("bob", json!({})))).await;
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let cluster = cluster(&[
        "--jwt-secret",
        token::SECRET,
        "--jwt-issuer",
        "acme",
        "--jwt-audience",
        "chat",
    ]);
    let url = cluster.ws(0);
    let good = token::hs256(&claims("a", json!({"iss": "acme", "aud": "chat"})));
    connect(url).await.login_with_token(&good).await.unwrap();
    expect_refused(
        url,
        &token::hs256(&claims("a", json!({"iss": "evil", "aud": "chat"}))),
    )
    .await;
    expect_refused(url, &token::hs256(&claims("a", json!({"iss": "acme"})))).await;
}

#[tokio::test]
async fn a_token_on_the_websocket_upgrade_logs_in_at_once() {
    let cluster = cluster(&["--jwt-secret", token::SECRET]);
    let t = token::hs256(&claims("carol", json!({})));
    let mut ws = WsClient::connect_with_token(cluster.ws(0), &t)
        .await
        .unwrap();
    let welcome = expect_op(&mut ws, "welcome").await;
    assert_eq!(welcome.frame.user.as_deref(), Some("carol"));

    // A bad token on the upgrade is refused with HTTP 401 before any WebSocket exists.
    let expired = token::hs256(&claims("carol", json!({"exp": at(-3600)})));
    let refused = WsClient::connect_with_token(cluster.ws(0), &expired).await;
    let error = format!("{:#}", refused.err().expect("the upgrade is refused"));
    assert!(error.contains("401"), "{error}");
}

#[tokio::test]
async fn a_gateway_without_any_login_method_refuses_to_start() {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_mrc-gateway"))
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("MRC_GATEWAY_INSECURE_DEV_AUTH")
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(64), "{status:?}");
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("--jwt-secret"), "{stderr}");
}
