//! The two frames every routed message produces, `msg` (to each receiver) and `report` (to
//! the sender), written without serde's map machinery: field names are literals, ids are
//! copied between quotes unless they need escaping, and the body goes as its bytes.
//! serde_json spent ~2.2k instructions on a 1:1 `msg` frame (callgrind,
//! docs/PERFORMANCE.md). The bytes are exactly what `serde_json` writes for [`Frame`]
//! (the tests compare them for arbitrary frames).

use serde_json::value::RawValue;

use super::{Frame, Report};
use crate::protocol::json_string as string;

/// The JSON of `frame` when it is a `msg` or a `report`, into `out`; `false` for any other
/// frame (serde writes those).
pub(super) fn routed(frame: &Frame<'_>, out: &mut Vec<u8>) -> bool {
    match frame {
        Frame::Msg {
            id,
            from,
            to,
            group,
            broadcast,
            ts,
            body,
            seq,
        } => msg(
            out,
            Msg {
                id,
                from: *from,
                to,
                group: *group,
                broadcast: *broadcast,
                ts: *ts,
                body,
                seq: *seq,
            },
        ),
        Frame::Report { report } => self::report(out, report),
        _ => return false,
    }
    true
}

/// The fields of a `msg` frame, in the order serde writes them.
struct Msg<'a> {
    id: &'a str,
    from: Option<&'a str>,
    to: &'a [String],
    group: Option<&'a str>,
    broadcast: bool,
    ts: u64,
    body: &'a RawValue,
    seq: Option<u64>,
}

fn msg(out: &mut Vec<u8>, m: Msg<'_>) {
    out.extend_from_slice(br#"{"op":"msg","id":"#);
    string(out, m.id);
    if let Some(from) = m.from {
        out.extend_from_slice(br#","from":"#);
        string(out, from);
    }
    if !m.to.is_empty() {
        out.extend_from_slice(br#","to":["#);
        for (i, user) in m.to.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, user);
        }
        out.push(b']');
    }
    if let Some(group) = m.group {
        out.extend_from_slice(br#","group":"#);
        string(out, group);
    }
    if m.broadcast {
        out.extend_from_slice(br#","broadcast":true"#);
    }
    out.extend_from_slice(br#","ts":"#);
    out.extend_from_slice(itoa::Buffer::new().format(m.ts).as_bytes());
    out.extend_from_slice(br#","body":"#);
    out.extend_from_slice(m.body.get().as_bytes());
    if let Some(seq) = m.seq {
        out.extend_from_slice(br#","seq":"#);
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    }
    out.push(b'}');
}

fn report(out: &mut Vec<u8>, report: &Report) {
    out.extend_from_slice(br#"{"op":"report","id":"#);
    string(out, &report.id);
    if !report.status.is_empty() {
        out.extend_from_slice(br#","status":{"#);
        for (i, (user, outcome)) in report.status.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, user);
            out.push(b':');
            out.push(b'"');
            out.extend_from_slice(outcome.as_str().as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
    }
    if let Some(group) = &report.group {
        out.extend_from_slice(br#","group":"#);
        string(out, group);
    }
    if let Some(counts) = &report.counts {
        out.extend_from_slice(br#","counts":"#);
        serde_json::to_writer(&mut *out, counts).expect("counts serialize");
    }
    out.push(b'}');
}
