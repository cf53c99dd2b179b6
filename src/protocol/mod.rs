//! Every wire and storage format of MRC, and the only types that derive serde.
//!
//! - [`client`]: frames between a client and its gateway.
//! - [`nats`]: payloads on NATS subjects (directory requests, deliver, ingress, events).
//! - [`compact`]: the compact form of deliver requests between gateways.
//! - [`group`]: group policies and the `mrc.grp.*` payloads.
//! - [`record`]: the values stored in the directory and groups KV buckets.
//! - [`code`]: the stable error codes and per-receiver outcomes.
//! - [`digest`]: order-independent digests of session sets (directory convergence).
//! - [`inbox`]: stored messages and the inbox requests (fetch, ack).
//! - [`service_error`]: the NATS micro-service headers every error reply carries.
//!
//! Message bodies are carried as `&RawValue`: validated as JSON, copied as bytes, never
//! parsed into a tree and re-encoded.

pub mod client;
pub mod code;
pub(crate) mod compact;
pub(crate) mod digest;
pub mod group;
pub mod inbox;
pub mod nats;
pub(crate) mod record;
pub(crate) mod service_error;

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// An encoded payload as `Bytes`. `Bytes::from` a buffer with spare room allocates a
/// header to share it; a buffer exactly its length is taken as it is, and the allocator
/// shrinks a block in place when at least half of it stays used. Two allocations fewer
/// per routed message.
pub(crate) fn into_bytes(mut out: Vec<u8>) -> Bytes {
    out.shrink_to_fit();
    Bytes::from(out)
}

/// A decimal number of at most 19 digits (every such number fits a `u64`), nothing else:
/// read by hand where a number sits in a wire format (NATS control lines, pooled replies).
pub(crate) fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether `b` cannot stand as it is inside a JSON string (a control character, a quote,
/// a backslash).
pub(crate) fn needs_escape(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

/// `s` as a JSON string: copied between quotes when nothing in it needs escaping (ids
/// nearly never do), else escaped by serde_json.
pub(crate) fn json_string(out: &mut Vec<u8>, s: &str) {
    // Every byte checked without a branch each (the compiler vectorizes the fold).
    if s.bytes().fold(false, |any, b| any | needs_escape(b)) {
        serde_json::to_writer(&mut *out, s).expect("a string always serializes");
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Milliseconds since the Unix epoch: the `ts` of messages and events.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Decodes any JSON payload of this module, with the stable code of what is wrong:
/// `bad_json` (not JSON) or `bad_frame` (JSON of the wrong shape).
pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<T, client::FrameError> {
    serde_json::from_slice(bytes).map_err(client::FrameError::from)
}

/// `value` as JSON bytes, written into a buffer of `capacity` bytes: a hint near the
/// encoded size spares the four or five regrowths (and copies) of a buffer that starts
/// small, which were a tenth of the allocations of a routed message.
pub(crate) fn to_json_bytes<T: serde::Serialize + ?Sized>(
    value: &T,
    capacity: usize,
) -> bytes::Bytes {
    let mut out = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut out, value).expect("payloads contain only serializable data");
    bytes::Bytes::from(out)
}

/// A message body from arbitrary bytes (`mrc.to.*` payloads, CLI arguments): JSON passes
/// as it is, other UTF-8 text becomes a JSON string, anything else is refused (`None`).
pub fn body_from_bytes(payload: &[u8]) -> Option<Box<serde_json::value::RawValue>> {
    use serde_json::value::RawValue;
    if let Ok(json) = serde_json::from_slice::<&RawValue>(payload) {
        return Some(json.to_owned());
    }
    let text = std::str::from_utf8(payload).ok()?;
    let quoted = serde_json::to_string(text).expect("a string always serializes");
    Some(RawValue::from_string(quoted).expect("a serialized string is valid JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bodies_become_json() {
        let get = |b: &[u8]| body_from_bytes(b).map(|v| v.get().to_string());
        assert_eq!(get(br#"{"a": 1}"#).unwrap(), r#"{"a": 1}"#);
        assert_eq!(get(b"hello world").unwrap(), r#""hello world""#);
        assert_eq!(get(b"42").unwrap(), "42");
        assert_eq!(get(b"").unwrap(), r#""""#);
        assert_eq!(get(b"say \"hi\"\n").unwrap(), r#""say \"hi\"\n""#);
        assert!(get(&[0xff, 0xfe]).is_none());
    }
}
