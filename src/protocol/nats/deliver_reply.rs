//! The reply to a deliver request, written and read by hand in the one form this module
//! writes, `{"delivered":[...],"absent":[...]}`: every routed message makes one, and
//! serde_json took ~860 instructions to write it and ~1.7k to read it back (callgrind,
//! docs/PERFORMANCE.md). Anything else (spacing, escapes, an error reply) goes through
//! serde_json, so a reply written by hand or by an older gateway still reads.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{decode_reply, ReplyError};
use crate::protocol::{json_string, needs_escape};

/// Which receivers the gateway pushed to, and which it does not hold (stale route). The
/// answering gateway borrows the ids from the request it answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeliverReply<'a> {
    pub delivered: Vec<Cow<'a, str>>,
    pub absent: Vec<Cow<'a, str>>,
}

const DELIVERED: &[u8] = br#"{"delivered":["#;
const ABSENT: &[u8] = br#"],"absent":["#;

impl DeliverReply<'_> {
    /// The JSON serde_json would write, without its machinery.
    pub(crate) fn encode(&self) -> bytes::Bytes {
        let mut out = Vec::with_capacity(self.size_hint());
        self.write(&mut out);
        crate::protocol::into_bytes(out)
    }

    /// Appends what [`Self::encode`] returns to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(DELIVERED);
        list(out, &self.delivered);
        out.extend_from_slice(ABSENT);
        list(out, &self.absent);
        out.extend_from_slice(b"]}");
    }

    /// Enough for the encoded reply when no id needs escaping.
    fn size_hint(&self) -> usize {
        let ids = self.delivered.iter().chain(&self.absent);
        32 + ids.map(|s| s.len() + 3).sum::<usize>()
    }

    /// A reply as [`Self::encode`] writes it, else as serde_json reads it (an error
    /// reply is [`ReplyError::Remote`]).
    pub(crate) fn decode(payload: &[u8]) -> Result<DeliverReply<'static>, ReplyError> {
        match read(payload) {
            Some(reply) => Ok(reply),
            None => decode_reply(payload),
        }
    }
}

fn list(out: &mut Vec<u8>, ids: &[Cow<'_, str>]) {
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, id);
    }
}

/// Exactly what [`DeliverReply::encode`] writes for ids without escapes, or `None`.
fn read(payload: &[u8]) -> Option<DeliverReply<'static>> {
    let rest = payload.strip_prefix(DELIVERED)?;
    let (delivered, rest) = strings(rest)?;
    let rest = rest.strip_prefix(&ABSENT[1..])?;
    let (absent, rest) = strings(rest)?;
    (rest == b"}").then_some(DeliverReply { delivered, absent })
}

/// `"a","b"]` (or `]`): the plain strings of a list and what follows its end.
fn strings(mut rest: &[u8]) -> Option<(Vec<Cow<'static, str>>, &[u8])> {
    let mut ids = Vec::new();
    if let Some(after) = rest.strip_prefix(b"]") {
        return Some((ids, after));
    }
    loop {
        let body = rest.strip_prefix(b"\"")?;
        let end = body.iter().position(|&b| needs_escape(b))?;
        if body[end] != b'"' {
            return None;
        }
        ids.push(Cow::Owned(
            std::str::from_utf8(&body[..end]).ok()?.to_owned(),
        ));
        match body.get(end + 1)? {
            b',' => rest = &body[end + 2..],
            b']' => return Some((ids, &body[end + 2..])),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(delivered: &[&str], absent: &[&str]) -> DeliverReply<'static> {
        let owned = |ids: &[&str]| ids.iter().map(|s| Cow::Owned(s.to_string())).collect();
        DeliverReply {
            delivered: owned(delivered),
            absent: owned(absent),
        }
    }

    #[test]
    fn replies_are_written_as_serde_writes_them_and_read_back_without_it() {
        let cases = [
            reply(&[], &[]),
            reply(&["alice"], &[]),
            reply(&[], &["bob"]),
            reply(&["a", "b", "ünï"], &["c", "d"]),
            reply(&["quote\"d", "back\\slash", "tab\t"], &["new\nline"]),
        ];
        for case in cases {
            let encoded = case.encode();
            assert_eq!(&encoded[..], &serde_json::to_vec(&case).unwrap()[..]);
            assert_eq!(DeliverReply::decode(&encoded).unwrap(), case);
        }
        let plain = reply(&["a", "b"], &["c"]).encode();
        assert!(read(&plain).is_some(), "plain ids need no serde_json");
    }

    #[test]
    fn replies_fit_the_buffer_their_size_hint_allocates() {
        let to: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        for n in [0, 1, 1000] {
            let reply = DeliverReply {
                delivered: to[..n].iter().map(|u| u.as_str().into()).collect(),
                absent: vec!["bob".into()],
            };
            assert!(reply.encode().len() <= reply.size_hint(), "{n}");
        }
    }

    #[test]
    fn other_json_goes_through_serde_json_and_errors_stay_errors() {
        let spaced = br#"{ "absent": ["c"], "delivered": ["a"] }"#;
        assert!(read(spaced).is_none());
        assert_eq!(DeliverReply::decode(spaced).unwrap(), reply(&["a"], &["c"]));
        let error = br#"{"error":{"code":"bad_frame","message":"no"}}"#;
        assert!(matches!(
            DeliverReply::decode(error),
            Err(ReplyError::Remote(_))
        ));
        for bad in [
            &br#"{"delivered":["a"],"absent":["b"]}x"#[..],
            br#"{"delivered":["a","absent":[]}"#,
            br#"{"delivered":["a],"absent":[]}"#,
            br#"{"delivered":[],"absent":["#,
            b"",
        ] {
            assert!(read(bad).is_none(), "{bad:?}");
            assert!(DeliverReply::decode(bad).is_err(), "{bad:?}");
        }
    }
}
