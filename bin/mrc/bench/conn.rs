//! The bench's own WebSocket connections to the gateways, and the frames it sends and
//! reads. Lean on purpose: small buffers (thousands of connections), a source address per
//! connection (to spread ephemeral ports over 127.0.0.x), and receipts classified by a
//! cheap scan of the gateway's frames instead of a full decode.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use mrc::protocol::client::{Incoming, Outgoing};
use mrc::protocol::code::Outcome;
use mrc::protocol::group::Counts;

pub type Ws = WebSocketStream<TcpStream>;

/// A gateway's WebSocket URL and the address it resolves to.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
}

impl Target {
    /// Parses `ws://127.0.0.1:8080/ws`. Only loopback addresses are accepted: the bench
    /// generates load and must never aim it at another machine by mistake.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        if uri.scheme_str() != Some("ws") {
            bail!("{url}: only ws:// URLs are supported");
        }
        let host = uri.host().context("the URL has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = if host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse()
                .with_context(|| format!("{url}: give the gateway as an IP address"))?
        };
        if !ip.is_loopback() {
            bail!("{url}: the bench only targets loopback addresses");
        }
        Ok(Target {
            url: url.to_string(),
            addr: SocketAddr::new(ip, uri.port_u16().unwrap_or(80)),
        })
    }
}

/// Source addresses 127.0.0.2 .. 127.0.0.(n+1): each has its own ~28k ephemeral ports.
pub fn source_ips(n: usize) -> Vec<IpAddr> {
    (0..n.clamp(1, 250))
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)))
        .collect()
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(1024 * 1024))
        .max_frame_size(Some(1024 * 1024))
}

/// Opens a WebSocket from `source` (when given) to `target`.
pub async fn open(target: &Target, source: Option<IpAddr>) -> anyhow::Result<Ws> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source.filter(|ip| ip.is_ipv4() == target.addr.is_ipv4()) {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding a source port on {ip}"))?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    stream.set_nodelay(true)?;
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(target.url.as_str(), stream, Some(config()))
            .await
            .with_context(|| format!("WebSocket handshake with {}", target.url))?;
    Ok(ws)
}

/// Logs in as `user` (dev-auth gateways) and waits for `welcome`, within `timeout`.
pub async fn login(
    target: &Target,
    source: Option<IpAddr>,
    user: &str,
    timeout: Duration,
) -> anyhow::Result<Ws> {
    let attempt = async {
        let mut ws = open(target, source).await?;
        let login = Outgoing::Login {
            user: Some(user),
            token: None,
            device: None,
        };
        ws.send(Message::text(login.encode())).await?;
        while let Some(message) = ws.next().await {
            if let Message::Text(text) = message? {
                return match classify(text.as_str()) {
                    Frame::Welcome => Ok(ws),
                    _ => bail!("login refused: {}", text.as_str()),
                };
            }
        }
        bail!("the gateway closed the connection during login")
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .with_context(|| format!("no welcome within {timeout:?}"))?
}

/// The body of a bench message: `{"t":<µs>,"s":<step>,"n":<seq>,"a":<µs>,"p":"xxx…"}`,
/// padded to `size` bytes when `size` allows. `t` is the intended send time on the
/// bench's clock, `a` the actual one (a late sender shows as the difference); `n` numbers
/// the messages of a step (to count losses and duplicates exactly).
pub fn body(t_us: u64, sent_us: u64, step: usize, seq: u64, size: usize) -> Box<RawValue> {
    let head = format!(r#"{{"t":{t_us},"s":{step},"n":{seq},"a":{sent_us},"p":""#);
    let pad = size.saturating_sub(head.len() + 2);
    let mut text = String::with_capacity(head.len() + pad + 2);
    text.push_str(&head);
    text.extend(std::iter::repeat_n('x', pad));
    text.push_str("\"}");
    RawValue::from_string(text).expect("the bench body is valid JSON")
}

/// What a `send` asks of the durable inbox (PROTOCOL.md 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: pushed live, `offline` for receivers who are not online.
    Live,
    /// `"offline":"store"`: kept for receivers who are not online.
    Offline,
    /// `"durable":true`: kept for every receiver until it acknowledges.
    Durable,
}

/// A `send` frame for `to`, with the sender's own message `id` when given.
pub fn send_frame(to: &[String], id: Option<&str>, keep: Keep, body: &RawValue) -> String {
    if keep == Keep::Live {
        return Outgoing::Send { to, id, body }.encode();
    }
    let to = serde_json::to_string(to).expect("strings always encode");
    let id = id.map_or(String::new(), |id| {
        format!(r#","id":{}"#, serde_json::Value::from(id))
    });
    let keep = match keep {
        Keep::Offline => r#","offline":"store""#,
        _ => r#","durable":true"#,
    };
    format!(
        r#"{{"op":"send","to":{to}{id}{keep},"body":{}}}"#,
        body.get()
    )
}

/// An `ack` of every stored message up to `seq`.
pub fn ack_frame(seq: u64) -> String {
    format!(r#"{{"op":"ack","seq":{seq}}}"#)
}

/// The `id` of a frame that starts `{"op":"<op>","id":"...`, as the gateway writes
/// `msg`, `report` and `error` frames with an id (the bench's ids need no escapes).
pub fn frame_id(text: &str) -> Option<&str> {
    let rest = &text[text.find(r#"","id":""#)? + 8..];
    Some(&rest[..rest.find('"')?])
}

/// The id the bench chooses for a message (`--chosen-ids`): its step, number and actual
/// send time (µs), so that a report says how long it took.
pub fn chosen_id(step: usize, seq: u64, sent_us: u64) -> String {
    format!("b{step}-{seq}-{sent_us}")
}

/// The step and send time (µs) of an id made by [`chosen_id`].
pub fn chosen_id_sent(id: &str) -> Option<(usize, u64)> {
    let mut parts = id.strip_prefix('b')?.split('-');
    let step = parts.next()?.parse().ok()?;
    let _seq: u64 = parts.next()?.parse().ok()?;
    let sent_us = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((step, sent_us))
}

/// The inbox sequence number of a stored message's `msg` frame: `seq` is its last field.
pub fn inbox_seq(text: &str) -> Option<u64> {
    let (seq, rest) = number_after(&text[text.rfind(r#","seq":"#)?..], r#","seq":"#)?;
    (rest == "}").then_some(seq)
}

/// A `group_send` frame to `group` (`group` already encoded as a JSON string).
pub fn group_send_frame(group_json: &str, body: &RawValue) -> String {
    format!(
        r#"{{"op":"group_send","group":{group_json},"body":{}}}"#,
        body.get()
    )
}

/// What a frame from the gateway is, as far as the bench cares.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    /// A bench message: intended and actual send time (µs), step, number within the
    /// step.
    Msg {
        t_us: u64,
        sent_us: u64,
        step: usize,
        seq: u64,
    },
    /// A `msg` whose body is not a bench body.
    ForeignMsg,
    /// A report: how many receivers had each outcome (one entry per receiver for a
    /// direct message, the `counts` of a group message).
    Report(Vec<(Outcome, u64)>),
    /// The result of an `ack`: the sequence number acknowledged and how many stored
    /// messages that removed.
    Acked {
        acked: u64,
        removed: u64,
    },
    Welcome,
    Error(String),
    Bye(&'a str),
    Other,
}

/// Classifies one frame. The gateway writes `op` first and a message's `body` last, so a
/// scan finds the bench's fields; anything unusual falls back to a full decode.
pub fn classify(text: &str) -> Frame<'_> {
    if text.starts_with(r#"{"op":"msg""#) {
        if let Some(frame) = scan_msg(text) {
            return frame;
        }
    } else if text.starts_with(r#"{"op":"report""#) {
        if let Some(outcomes) = scan_counts(text).or_else(|| scan_report(text)) {
            return Frame::Report(outcomes);
        }
    } else if text.starts_with(r#"{"op":"result""#) {
        if let Some(frame) = scan_acked(text) {
            return frame;
        }
    } else if text.starts_with(r#"{"op":"welcome""#) {
        return Frame::Welcome;
    } else if let Some(rest) = text.strip_prefix(r#"{"op":"bye","reason":""#) {
        return Frame::Bye(rest.split('"').next().unwrap_or(""));
    }
    decode(text)
}

fn number_after<'a>(text: &'a str, key: &str) -> Option<(u64, &'a str)> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    Some((rest[..end].parse().ok()?, &rest[end..]))
}

fn scan_msg(text: &str) -> Option<Frame<'static>> {
    let body = &text[text.rfind(r#""body":{"t":"#)? + 7..];
    let (t_us, rest) = number_after(body, r#"{"t":"#)?;
    let (step, rest) = number_after(rest, r#","s":"#)?;
    let (seq, rest) = number_after(rest, r#","n":"#)?;
    // Bodies of benches before the actual send time: as scheduled.
    let sent_us = number_after(rest, r#","a":"#).map_or(t_us, |(a, _)| a);
    Some(Frame::Msg {
        t_us,
        sent_us,
        step: usize::try_from(step).ok()?,
        seq,
    })
}

/// An ack's result: `{"op":"result",...,"result":{"user":...,"acked":N,"removed":N}}`.
fn scan_acked(text: &str) -> Option<Frame<'static>> {
    let (acked, rest) = number_after(text, r#","acked":"#)?;
    let (removed, _) = number_after(rest, r#","removed":"#)?;
    Some(Frame::Acked { acked, removed })
}

fn scan_report(text: &str) -> Option<Vec<(Outcome, u64)>> {
    let key = r#""status":{"#;
    let rest = &text[text.find(key)? + key.len()..];
    let status = &rest[..rest.find('}')?];
    status
        .split(',')
        .map(|entry| {
            let value = entry.rsplit(':').next()?.trim_matches('"');
            Some((serde_json::from_str(&format!("\"{value}\"")).ok()?, 1))
        })
        .collect()
}

/// The `counts` of a group report, which come last (after `status` for a small group:
/// they count the same receivers, so they are taken instead of it).
fn scan_counts(text: &str) -> Option<Vec<(Outcome, u64)>> {
    let key = r#""counts":{"#;
    let rest = &text[text.rfind(key)? + key.len() - 1..];
    let counts: Counts = serde_json::from_str(&rest[..=rest.find('}')?]).ok()?;
    Some(outcome_counts(counts))
}

fn outcome_counts(c: Counts) -> Vec<(Outcome, u64)> {
    [
        (Outcome::Delivered, c.delivered),
        (Outcome::Offline, c.offline),
        (Outcome::Unavailable, c.unavailable),
    ]
    .into_iter()
    .filter(|&(_, n)| n > 0)
    .map(|(o, n)| (o, n as u64))
    .collect()
}

fn decode(text: &str) -> Frame<'_> {
    let Ok(frame) = serde_json::from_str::<Incoming>(text) else {
        return Frame::Other;
    };
    match frame.op.as_str() {
        "msg" => {
            let fields = frame
                .body
                .and_then(|b| serde_json::from_str::<serde_json::Value>(b.get()).ok())
                .and_then(|b| {
                    let field = |k: &str| b.get(k).and_then(|v| v.as_u64());
                    let t = field("t")?;
                    Some((t, field("a").unwrap_or(t), field("s")?, field("n")?))
                });
            match fields {
                Some((t_us, sent_us, step, seq)) => Frame::Msg {
                    t_us,
                    sent_us,
                    step: step as usize,
                    seq,
                },
                None => Frame::ForeignMsg,
            }
        }
        "report" => Frame::Report(match frame.counts {
            Some(counts) => outcome_counts(counts),
            None => frame
                .status
                .unwrap_or_default()
                .into_values()
                .map(|o| (o, 1))
                .collect(),
        }),
        "result" => {
            let field = |k: &str| frame.result.as_ref()?.get(k)?.as_u64();
            match (field("acked"), field("removed")) {
                (Some(acked), Some(removed)) => Frame::Acked { acked, removed },
                _ => Frame::Other,
            }
        }
        "welcome" => Frame::Welcome,
        "error" => Frame::Error(frame.code.map_or("unknown".into(), |c| c.to_string())),
        "bye" => Frame::Bye("bye"),
        _ => Frame::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mrc::protocol::client::{Frame as Out, Report};
    use mrc::protocol::inbox::{AckReply, Offline};
    use std::collections::BTreeMap;

    #[test]
    fn targets_are_loopback_only() {
        let t = Target::parse("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(Target::parse("ws://localhost:9/ws").unwrap().addr.port(), 9);
        assert!(Target::parse("ws://[::1]:8080/ws").is_ok());
        assert!(Target::parse("ws://10.0.0.1:8080/ws").is_err());
        assert!(Target::parse("ws://example.com/ws").is_err());
        assert!(Target::parse("wss://127.0.0.1/ws").is_err());
        assert_eq!(source_ips(2)[1].to_string(), "127.0.0.3");
    }

    #[test]
    fn bodies_have_the_requested_size() {
        let b = body(123_456, 123_999, 3, 42, 128);
        assert_eq!(b.get().len(), 128);
        assert!(b
            .get()
            .starts_with(r#"{"t":123456,"s":3,"n":42,"a":123999,"p":"xxx"#));
        assert!(
            body(1, 1, 0, 0, 10).get().len() > 10,
            "too small to pad: minimal body"
        );
    }

    #[test]
    fn bodies_without_the_actual_send_time_count_as_sent_on_schedule() {
        let text = r#"{"op":"msg","id":"x","to":["a"],"ts":1,"body":{"t":5,"s":0,"n":1,"p":"x"}}"#;
        let want = || Frame::Msg {
            t_us: 5,
            sent_us: 5,
            step: 0,
            seq: 1,
        };
        assert_eq!(scan_msg(text), Some(want()));
        assert_eq!(decode(text), want());
    }

    #[test]
    fn gateway_frames_are_classified_by_scan() {
        let to = vec!["u1".to_string()];
        let b = body(987_654, 987_700, 2, 7, 64);
        let msg = Out::Msg {
            id: "01J",
            from: Some("u0"),
            to: &to,
            group: None,
            broadcast: false,
            ts: 1,
            body: &b,
            seq: None,
        }
        .encode();
        let text = std::str::from_utf8(&msg).unwrap();
        assert_eq!(
            scan_msg(text),
            Some(Frame::Msg {
                t_us: 987_654,
                sent_us: 987_700,
                step: 2,
                seq: 7
            })
        );
        assert_eq!(classify(text), decode(text), "scan and decode agree");

        let report = Report::direct(
            "m".into(),
            [
                ("u1".to_string(), Outcome::Delivered),
                ("u2".to_string(), Outcome::Offline),
            ]
            .into(),
        );
        let text = Out::Report { report: &report }.encode();
        let text = std::str::from_utf8(&text).unwrap();
        assert_eq!(
            classify(text),
            Frame::Report(vec![(Outcome::Delivered, 1), (Outcome::Offline, 1)])
        );
        assert_eq!(classify(text), decode(text));

        // A group report: `counts`, and `status` too when the group is small.
        let mut small = Report::direct("g".into(), [("u1".to_string(), Outcome::Delivered)].into());
        small.group = Some("team".into());
        small.counts = Some(Counts {
            delivered: 1,
            offline: 0,
            unavailable: 0,
        });
        let mut big = Report::direct("g".into(), BTreeMap::new());
        big.group = Some("big".into());
        big.counts = Some(Counts {
            delivered: 999,
            offline: 2,
            unavailable: 1,
        });
        for (report, want) in [
            (&small, vec![(Outcome::Delivered, 1)]),
            (
                &big,
                vec![
                    (Outcome::Delivered, 999),
                    (Outcome::Offline, 2),
                    (Outcome::Unavailable, 1),
                ],
            ),
        ] {
            let text = Out::Report { report }.encode();
            let text = std::str::from_utf8(&text).unwrap();
            assert_eq!(classify(text), Frame::Report(want), "{text}");
            assert_eq!(classify(text), decode(text));
        }

        let group_msg = Out::Msg {
            id: "01K",
            from: Some("u0"),
            to: &[],
            group: Some("big"),
            broadcast: false,
            ts: 1,
            body: &b,
            seq: None,
        }
        .encode();
        let text = std::str::from_utf8(&group_msg).unwrap();
        assert_eq!(
            classify(text),
            Frame::Msg {
                t_us: 987_654,
                sent_us: 987_700,
                step: 2,
                seq: 7
            }
        );

        assert_eq!(
            classify(r#"{"op":"bye","reason":"slow_consumer"}"#),
            Frame::Bye("slow_consumer")
        );
        assert_eq!(
            classify(r#"{"op":"error","code":"rate_limited","message":"x"}"#),
            Frame::Error("rate_limited".into())
        );
        assert_eq!(
            classify(r#"{"op":"welcome","user":"a","session":"s","gateway":"g"}"#),
            Frame::Welcome
        );
        assert_eq!(
            classify(r#"{"op":"msg","id":"1","to":["a"],"ts":1,"body":"hi"}"#),
            Frame::ForeignMsg
        );
        assert_eq!(classify("not json"), Frame::Other);
    }

    #[test]
    fn stored_messages_and_ack_results_are_scanned() {
        let to = vec!["u1".to_string()];
        let b = body(0, 0, 0, 77, 64);
        let msg = Out::Msg {
            id: "b1-s77",
            from: Some("u0"),
            to: &to,
            group: None,
            broadcast: false,
            ts: 1,
            body: &b,
            seq: Some(4012),
        }
        .encode();
        let text = std::str::from_utf8(&msg).unwrap();
        assert_eq!(
            (frame_id(text), inbox_seq(text)),
            (Some("b1-s77"), Some(4012))
        );
        assert_eq!(
            classify(text),
            Frame::Msg {
                t_us: 0,
                sent_us: 0,
                step: 0,
                seq: 77
            }
        );
        let live = r#"{"op":"msg","id":"x","to":["a"],"ts":1,"body":{"seq":5}}"#;
        assert_eq!(inbox_seq(live), None, "a body's field is not the inbox seq");
        let report = r#"{"op":"report","id":"b1-s3","status":{"u":"stored"}}"#;
        assert_eq!(frame_id(report), Some("b1-s3"));
        assert_eq!(chosen_id_sent("b1-s3"), None, "not a chosen id");
        assert_eq!(
            chosen_id_sent(&chosen_id(2, 17, 123_456)),
            Some((2, 123_456))
        );
        assert_eq!(chosen_id_sent("b2-17-5-9"), None);
        assert_eq!(classify(report), Frame::Report(vec![(Outcome::Stored, 1)]));

        let reply = AckReply {
            user: "u1".into(),
            acked: 4012,
            removed: 16,
        };
        let result = serde_json::to_value(&reply).unwrap();
        let text = Out::Result {
            id: None,
            result: &result,
        }
        .encode();
        let text = std::str::from_utf8(&text).unwrap();
        let want = Frame::Acked {
            acked: 4012,
            removed: 16,
        };
        assert_eq!(classify(text), want);
        assert_eq!(decode(text), want);
        assert_eq!(
            classify(r#"{"op":"result","result":{"a":1}}"#),
            Frame::Other
        );
        assert_eq!(ack_frame(9), r#"{"op":"ack","seq":9}"#);
    }

    #[test]
    fn send_frames_carry_the_body_untouched() {
        let b = body(5, 5, 0, 1, 40);
        let to = ["a".to_string(), "b".to_string()];
        let frame = send_frame(&to, None, Keep::Live, &b);
        assert_eq!(
            frame,
            format!(r#"{{"op":"send","to":["a","b"],"body":{}}}"#, b.get())
        );
        for (keep, want) in [(Keep::Offline, Some(Offline::Store)), (Keep::Durable, None)] {
            let frame = send_frame(&to, Some("m-1"), keep, &b);
            match mrc::protocol::client::parse(&frame).unwrap() {
                mrc::protocol::client::Request::Send {
                    to: parsed,
                    id,
                    body,
                    offline,
                    durable,
                } => {
                    assert_eq!((parsed.as_slice(), id.as_deref()), (&to[..], Some("m-1")));
                    assert_eq!((offline, durable), (want, keep == Keep::Durable));
                    assert_eq!(body.get(), b.get());
                }
                other => panic!("{other:?}"),
            }
        }
        let frame = group_send_frame(r#""big""#, &b);
        assert_eq!(
            frame,
            format!(r#"{{"op":"group_send","group":"big","body":{}}}"#, b.get())
        );
        match mrc::protocol::client::parse(&frame).unwrap() {
            mrc::protocol::client::Request::GroupSend { group, id, body } => {
                assert_eq!((group.as_str(), id, body.get()), ("big", None, b.get()));
            }
            other => panic!("{other:?}"),
        }
    }
}
