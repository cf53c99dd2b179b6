//! Login policies (multi-device): `single` and `device` replace older sessions with a
//! targeted kick; concurrent logins end with exactly one winner.

use std::time::Duration;

use mrc::client::WsClient;
use mrc::protocol::code::Outcome;

use crate::support::client::{connect, expect_op, login, send};
use crate::support::cluster::{lookup, Cluster};
use crate::support::eventually;

fn cluster(policy: &str, gateways: usize) -> Cluster {
    let mut cluster = Cluster::start(0, 0);
    cluster.center_args = vec!["--login-policy".into(), policy.into()];
    cluster.start_center("c0");
    cluster.start_center("c1");
    for i in 0..gateways {
        cluster.start_gateway(&format!("g{i}"));
    }
    cluster
}

/// Expects the `kicked` frame, then the end of the connection.
async fn expect_kicked(ws: &mut WsClient) {
    let kicked = expect_op(ws, "kicked").await;
    assert_eq!(kicked.frame.reason.as_deref(), Some("replaced"));
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("closed in time");
    assert!(
        end.unwrap().is_none(),
        "the connection closes after `kicked`"
    );
}

async fn sessions_of(nats: &async_nats::Client, user: &str) -> Vec<String> {
    let reply = lookup(nats, &[user]).await;
    reply.users[user]
        .iter()
        .map(|l| l.gateway.clone())
        .collect()
}

#[tokio::test]
async fn single_login_replaces_the_older_session_on_another_gateway() {
    let cluster = cluster("single", 3);
    let nats = cluster.client().await;
    let mut old = login(cluster.ws(0), "alice").await;
    let mut new = login(cluster.ws(1), "alice").await;
    expect_kicked(&mut old).await;
    eventually(Duration::from_secs(5), "one session, on g1", || async {
        (sessions_of(&nats, "alice").await == ["g1"]).then_some(())
    })
    .await;
    let mut bob = login(cluster.ws(2), "bob").await;
    let (report, _) = send(&mut bob, &["alice"], "m1", "1").await;
    assert_eq!(report["alice"], Outcome::Delivered);
    assert_eq!(
        expect_op(&mut new, "msg").await.frame.id.as_deref(),
        Some("m1")
    );
}

#[tokio::test]
async fn concurrent_logins_on_two_gateways_end_with_exactly_one_winner() {
    let cluster = cluster("single", 2);
    let nats = cluster.client().await;
    for round in 0..5 {
        let user = format!("racer-{round}");
        let (mut a, mut b) = (connect(cluster.ws(0)).await, connect(cluster.ws(1)).await);
        let (ra, rb) = tokio::join!(a.login(&user), b.login(&user));
        // A login may lose before its welcome (then the kick is all it sees).
        let welcomed = [ra.is_ok(), rb.is_ok()];
        assert!(
            welcomed.iter().any(|w| *w),
            "round {round}: nobody logged in"
        );
        let gateways = eventually(Duration::from_secs(5), "one session left", || async {
            let gateways = sessions_of(&nats, &user).await;
            (gateways.len() == 1).then_some(gateways)
        })
        .await;
        let (winner, loser) = if gateways[0] == "g0" {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        if welcomed.iter().all(|w| *w) {
            expect_kicked(loser).await;
        }
        // The directory settled on one session: the winner's, which still receives.
        let mut probe = login(cluster.ws(0), &format!("probe-{round}")).await;
        let (report, _) = send(&mut probe, &[&user], "p", "1").await;
        assert_eq!(report[&user], Outcome::Delivered, "round {round}");
        assert_eq!(
            expect_op(winner, "msg").await.frame.id.as_deref(),
            Some("p")
        );
        assert_eq!(sessions_of(&nats, &user).await.len(), 1, "round {round}");
    }
}

#[tokio::test]
async fn the_device_policy_keeps_one_session_per_device_class() {
    let cluster = cluster("device", 3);
    let nats = cluster.client().await;
    let mut phone = connect(cluster.ws(0)).await;
    phone.login_device("alice", Some("mobile")).await.unwrap();
    let mut laptop = connect(cluster.ws(1)).await;
    laptop.login_device("alice", Some("desktop")).await.unwrap();
    let mut new_phone = connect(cluster.ws(2)).await;
    new_phone
        .login_device("alice", Some("mobile"))
        .await
        .unwrap();
    expect_kicked(&mut phone).await;
    eventually(
        Duration::from_secs(5),
        "desktop and the new phone",
        || async {
            let mut gateways = sessions_of(&nats, "alice").await;
            gateways.sort();
            (gateways == ["g1", "g2"]).then_some(())
        },
    )
    .await;
    let mut bob = login(cluster.ws(0), "bob").await;
    let (report, _) = send(&mut bob, &["alice"], "m", "1").await;
    assert_eq!(report["alice"], Outcome::Delivered);
    expect_op(&mut laptop, "msg").await;
    expect_op(&mut new_phone, "msg").await;
}
