//! The `group` scenario: the online members of one group (`--group-size`, default 1,000;
//! `--group-online` of them logged in, default all up to `--users`) log in across the
//! gateways, one of them creates the group through the client protocol (`group_create`,
//! then `group_add`, [`MEMBERS_PER_REQUEST`] members per frame), and the stepped load of
//! [`super::load`] sends `group_send`s from random members. Every other online member
//! receives each message, so R messages/s offer R × (online − 1) deliveries/s.
//!
//! Before the first step the bench asks the centers (`mrc.grp.resolve`, as the sending
//! gateway will) until they see every member and every online one, so the first step does
//! not measure the mirrors catching up. The group is deleted afterwards (`mrc.grp.delete`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::{SinkExt, StreamExt};
use mrc::connection::Nats;
use tokio_tungstenite::tungstenite::Message;

use super::conn::{Target, Ws};
use super::load::{self, StepResult, Traffic};
use super::output::{progress, Output};
use super::procs::Watched;
use super::stats::Micros;
use mrc::connection;
use mrc::protocol::client::Incoming;
use mrc::protocol::group::{GroupInfo, GroupRequest, ResolveReply};
use mrc::protocol::nats::encode;
use mrc::subject::{Subjects, GRP_DELETE, GRP_RESOLVE};

/// Members named in one `group_create` / `group_add` frame. Bench user ids are shorter
/// than 40 bytes, so a frame stays far below the gateway's `--max-frame-bytes` (64 KiB);
/// the centers take any number per request (a group has at most 20,000 members).
pub const MEMBERS_PER_REQUEST: usize = 500;
/// How long one group operation may take (each member is one KV write).
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames read from the owner's connection while waiting for one answer.
const MAX_FRAMES_PER_OP: usize = 10_000;
/// How long the centers get to see the whole group before the load starts anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The group's members (`user_id(prefix, i)`, the first `online` of them are the users
/// that log in) and how the membership requests split them.
pub fn member_chunks(members: &[String]) -> impl Iterator<Item = &[String]> {
    members.chunks(MEMBERS_PER_REQUEST)
}

/// Deliveries each message makes when `online` of the members are logged in (the sender,
/// one of them, gets none) and members that never logged in.
pub fn fan_out(size: usize, online: usize) -> (usize, u64) {
    let online = online.min(size);
    (online.saturating_sub(1), (size - online) as u64)
}

/// Logs the members in, creates the group, runs the load; returns the load's
/// configuration as run (deliveries per message) and each step's figures.
pub async fn run(
    cfg: &load::Config,
    size: usize,
    nats: Option<(&Nats, &Subjects)>,
    targets: &[Target],
    watched: &Watched,
    out: &mut Output,
) -> anyhow::Result<(load::Config, Vec<StepResult>)> {
    let mut logged_in = load::log_in(cfg, targets).await?;
    let members: Vec<String> = (0..size).map(|i| load::user_id(&cfg.prefix, i)).collect();
    let group = format!("{}-group", cfg.prefix);
    let (owner_index, owner_ws) = logged_in.conns.first_mut().context("nobody logged in")?;
    let owner = logged_in.users[*owner_index].0.clone();
    let start = Instant::now();
    let created = create(owner_ws, &group, &members).await?;
    let took = start.elapsed();
    if created != size {
        bail!("group {group} has {created} members, not {size}");
    }
    let online = logged_in.conns.len();
    let (fanout, offline) = fan_out(size, online);
    println!(
        "group: {group} created with {size} members in {} ({} requests); {online} online, {offline} offline: {fanout} deliveries per message",
        Micros(took.as_micros() as u64),
        member_chunks(&members).count()
    );
    if let Some((client, subjects)) = nats {
        settle(client, subjects, &group, &owner, size, fanout).await;
    } else {
        println!("group: NATS not reachable: not checked that the centers see every member");
    }
    out.record(
        "setup",
        cfg.scenario,
        serde_json::json!({
            "group_size": size,
            "online": online,
            "offline": offline,
            "create_s": took.as_secs_f64(),
        }),
    );
    let cfg = load::Config {
        fanout,
        traffic: Traffic::Group {
            group: group.clone(),
            offline,
        },
        ..cfg.clone()
    };
    let results = load::run(&cfg, targets, logged_in, watched, out).await;
    if let Some((client, subjects)) = nats {
        delete(client, subjects, &group).await;
    }
    Ok((cfg, results?))
}

/// `group_create` with the first chunk of members, then `group_add` with the others, all
/// acting as the owner on its own connection; the group's size at the end.
async fn create(ws: &mut Ws, group: &str, members: &[String]) -> anyhow::Result<usize> {
    let mut size = 0;
    for (k, chunk) in member_chunks(members).enumerate() {
        let (op, id) = if k == 0 {
            ("group_create", "bench-create".to_string())
        } else {
            ("group_add", format!("bench-add-{k}"))
        };
        let frame = serde_json::json!({"op": op, "id": id, "group": group, "members": chunk});
        let result = call(ws, &frame.to_string(), &id)
            .await
            .with_context(|| format!("{op} {group} ({} members)", chunk.len()))?;
        let info: GroupInfo =
            serde_json::from_value(result).with_context(|| format!("the result of {op}"))?;
        size = info.size;
    }
    Ok(size)
}

/// Sends one group op and waits for its `result` (or `error`), ignoring other frames.
async fn call(ws: &mut Ws, frame: &str, id: &str) -> anyhow::Result<serde_json::Value> {
    ws.send(Message::text(frame)).await?;
    let answer = async {
        for _ in 0..MAX_FRAMES_PER_OP {
            let Some(message) = ws.next().await else {
                bail!("the gateway closed the connection");
            };
            let Message::Text(text) = message? else {
                continue;
            };
            let Ok(frame) = serde_json::from_str::<Incoming>(text.as_str()) else {
                continue;
            };
            if frame.id.as_deref() != Some(id) {
                continue;
            }
            match frame.op.as_str() {
                "result" => return frame.result.context("a result without `result`"),
                "error" => bail!(
                    "{}: {}",
                    frame.code.map_or("error".into(), |c| c.to_string()),
                    frame.message.unwrap_or_default()
                ),
                _ => {}
            }
        }
        bail!("no answer within {MAX_FRAMES_PER_OP} frames")
    };
    tokio::time::timeout(OP_TIMEOUT, answer)
        .await
        .with_context(|| format!("no answer within {OP_TIMEOUT:?}"))?
}

/// Waits (bounded) until a center resolves the group as a send by `owner` will: every
/// other member in it, `online` of them with a session.
async fn settle(
    client: &Nats,
    subjects: &Subjects,
    group: &str,
    owner: &str,
    size: usize,
    online: usize,
) {
    let start = Instant::now();
    let request = GroupRequest {
        group: group.to_string(),
        by: Some(owner.to_string()),
        ..GroupRequest::default()
    };
    let mut seen = None;
    while start.elapsed() < SETTLE_TIMEOUT {
        let reply: Result<ResolveReply, _> = connection::request(
            client,
            subjects.group(GRP_RESOLVE),
            encode(&request),
            Duration::from_secs(5),
        )
        .await;
        match reply {
            Ok(r) => {
                let reachable: usize = r.gateways.values().map(Vec::len).sum();
                if r.size + 1 == size && reachable == online {
                    println!(
                        "group: the centers resolve {reachable} online members on {} gateway(s) ({:.1}s)",
                        r.gateways.len(),
                        start.elapsed().as_secs_f64()
                    );
                    return;
                }
                seen = Some((r.size + 1, reachable));
            }
            Err(e) => progress(&format!("mrc.grp.resolve failed: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "group: after {SETTLE_TIMEOUT:?} the centers still resolve (members, online others) = {seen:?}, not ({size}, {online}); running anyway"
    );
}

/// Deletes the group as a trusted backend, so a cluster that outlives the bench does not
/// keep it (best effort).
async fn delete(client: &Nats, subjects: &Subjects, group: &str) {
    let request = GroupRequest {
        group: group.to_string(),
        ..GroupRequest::default()
    };
    let reply: Result<GroupInfo, _> = connection::request(
        client,
        subjects.group(GRP_DELETE),
        encode(&request),
        OP_TIMEOUT,
    )
    .await;
    if let Err(e) = reply {
        println!("group: deleting {group} failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_per_message_leave_out_the_sender_and_the_offline() {
        assert_eq!(fan_out(1000, 1000), (999, 0));
        assert_eq!(fan_out(1000, 200), (199, 800));
        assert_eq!(fan_out(1000, 5000), (999, 0));
        assert_eq!(fan_out(2, 1), (0, 1));
        assert_eq!(fan_out(2, 0), (0, 2));
    }

    #[test]
    fn membership_requests_fit_a_frame() {
        let members: Vec<String> = (0..1001).map(|i| load::user_id("bABCDEF", i)).collect();
        let chunks: Vec<&[String]> = member_chunks(&members).collect();
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [500, 500, 1]
        );
        assert_eq!(chunks.concat(), members, "every member once, in order");
        let largest = (0..mrc::groups::MAX_GROUP_MEMBERS)
            .map(|i| load::user_id("bABCDEF", i))
            .collect::<Vec<_>>();
        for chunk in member_chunks(&largest) {
            let frame = serde_json::json!({
                "op": "group_add", "id": "bench-add-39", "group": "bABCDEF-group", "members": chunk,
            });
            assert!(frame.to_string().len() < 16 * 1024);
        }
    }
}
