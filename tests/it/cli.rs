//! The `mrc` command line, as a script would use it.

use std::process::{Command, Output};

use crate::support::client::{expect_op, login};
use crate::support::cluster::Cluster;

fn mrc(cluster: &Cluster, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mrc"))
        .env("MRC_NATS_URL", cluster.nats_url())
        .args(args)
        .output()
        .expect("running mrc")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn send_lookup_and_centers_print_results_and_exit_codes_scripts_can_use() {
    let cluster = Cluster::start(2, 1);
    let mut alice = login(cluster.ws(0), "alice").await;

    let out = mrc(
        &cluster,
        &[
            "send",
            "--to",
            "alice",
            "--from",
            "ops",
            "--id",
            "c1",
            "hello there",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout(&out).trim(),
        r#"{"id":"c1","status":{"alice":"delivered"}}"#
    );
    let msg = expect_op(&mut alice, "msg").await;
    assert_eq!(msg.frame.body.unwrap().get(), r#""hello there""#);
    assert_eq!(msg.frame.from.as_deref(), Some("ops"));

    let out = mrc(&cluster, &["send", "--to", "alice,ghost", r#"{"k":1}"#]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "not every receiver reached: {out:?}"
    );
    assert!(stdout(&out).contains(r#""ghost":"offline""#));
    assert_eq!(
        expect_op(&mut alice, "msg").await.frame.body.unwrap().get(),
        r#"{"k":1}"#
    );

    let out = mrc(&cluster, &["send", "--to", "alice", "--id", "", "x"]);
    assert_eq!(out.status.code(), Some(65), "refused input: {out:?}");

    let out = mrc(&cluster, &["lookup", "alice", "ghost"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("alice\tonline\t1 sessions\tg0(1)"), "{text}");
    assert!(text.contains("ghost\toffline"), "{text}");

    let out = mrc(&cluster, &["presence", "alice", "ghost"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            reply["users"]["alice"]["online"].as_bool(),
            reply["users"]["ghost"]["online"].as_bool()
        ),
        (Some(true), Some(false))
    );

    let out = mrc(
        &cluster,
        &[
            "broadcast",
            "--id",
            "all",
            "--from",
            "ops",
            "hello everyone",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout(&out).trim(),
        r#"{"id":"all","gateways":1,"sessions":1}"#
    );
    let msg = expect_op(&mut alice, "msg").await;
    assert!(msg.frame.broadcast);
    assert_eq!(msg.frame.body.unwrap().get(), r#""hello everyone""#);

    let out = mrc(&cluster, &["centers"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("center=c0") && text.contains("center=c1"),
        "{text}"
    );
}

#[tokio::test]
async fn the_cli_says_when_nobody_answers() {
    let cluster = Cluster::start(0, 0);
    let out = mrc(&cluster, &["send", "--to", "alice", "hi"]);
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let out = mrc(&cluster, &["centers", "--wait-ms", "200"]);
    assert_eq!(out.status.code(), Some(69), "{out:?}");
}

#[tokio::test]
async fn listen_prints_what_arrives() {
    let cluster = Cluster::start(1, 1);
    let ws = cluster.ws(0).to_string();
    let url = cluster.nats_url().to_string();
    let listener = std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_mrc"))
            .env("MRC_NATS_URL", url)
            .args(["listen", "bob", "--gateway", &ws, "--count", "1"])
            .output()
            .expect("running mrc listen")
    });
    let nats = cluster.client().await;
    crate::support::eventually(
        std::time::Duration::from_secs(10),
        "bob logged in",
        || async {
            (!crate::support::cluster::online(&nats, &["bob"])
                .await
                .is_empty())
            .then_some(())
        },
    )
    .await;
    let out = mrc(&cluster, &["send", "--to", "bob", "--id", "l1", "ping"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = listener.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains(r#""op":"msg","id":"l1""#), "{text}");
}

/// `mrc token` with `args`: the token it printed.
fn mint(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mrc"))
        .arg("token")
        .args(args)
        .env_remove("MRC_GATEWAY_JWT_SECRET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn tokens_minted_by_mrc_token_log_in_with_hs256_and_es256() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = crate::support::keys::jwt_key_pair(dir.path(), "k.pem", "p.pem");
    let (key, public) = (key.to_str().unwrap(), public.to_str().unwrap());

    let secret = "minted-secret-0123456789abcdef-0123456789";
    let mut cluster = Cluster::start(1, 0);
    cluster.dev_auth = false;
    cluster.gateway_args = vec!["--jwt-secret".into(), secret.into()];
    cluster.start_gateway("g0");
    cluster.gateway_args = vec!["--jwt-public-key".into(), public.into()];
    cluster.start_gateway("g1");

    let hs = mint(&["--secret", secret, "--sub", "alice", "--ttl", "10m"]);
    let es = mint(&[
        "--key", key, "--sub", "张伟", "--ttl", "1h", "--scope", "mrc:send",
    ]);
    for (gateway, token, user) in [(0, hs, "alice"), (1, es, "张伟")] {
        let mut ws = mrc::client::WsClient::connect(cluster.ws(gateway))
            .await
            .unwrap();
        let welcome = ws.login_with_token(&token).await.unwrap();
        assert_eq!(welcome.user.as_deref(), Some(user));
    }
}
