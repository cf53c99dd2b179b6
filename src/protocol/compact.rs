//! The compact form of `mrc.gw.<gateway>.deliver` requests, which gateways send each
//! other: the fields one after another with their lengths, the body's bytes last. Decoding
//! the JSON form took ~5.7k instructions per request and encoding it ~2.2k (callgrind,
//! docs/PERFORMANCE.md); this form is read by slicing. A gateway still takes the JSON
//! form, so `nats req mrc.gw.<gateway>.deliver '{...}'` works by hand.
//!
//! Layout (integers little-endian; every string and the body is a `u32` length and its
//! UTF-8 bytes; a list is a `u32` count and its elements):
//!
//! ```text
//! 0x00 0x01 flags:u8 ts:u64 id [from] [group] to:[str] rcpt:[u32] members:[str] body
//! ```
//!
//! `flags`: 1 dedupe, 2 `from` present, 4 `group` present. A batch is `0x00 0x02`, a
//! `u32` count, then each request as a `u32` length and its compact form. No JSON text
//! starts with a zero byte, so the first byte tells the forms apart.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;

use super::client::FrameError;
use super::code::ErrorCode;
use super::nats::DeliverRequest;

/// The first byte of every compact payload.
const MAGIC: u8 = 0;
const ONE: u8 = 1;
const BATCH: u8 = 2;
const DEDUPE: u8 = 1;
const FROM: u8 = 2;
const GROUP: u8 = 4;

/// Whether `payload` is in the compact form (else it is JSON, or nothing valid).
pub(crate) fn is_compact(payload: &[u8]) -> bool {
    payload.first() == Some(&MAGIC)
}

/// `request` in the compact form, in a buffer of exactly its length (which `Bytes` takes
/// without allocating a header).
pub(crate) fn encode(request: &DeliverRequest<'_>) -> Bytes {
    let strings = |list: &mut dyn Iterator<Item = &str>| list.map(|s| s.len() + 4).sum::<usize>();
    // The first three bytes, `ts`, and the lengths of `id` and the body and of the lists.
    let len = 31
        + request.id.len()
        + request.from.as_ref().map_or(0, |s| s.len() + 4)
        + request.group.as_ref().map_or(0, |s| s.len() + 4)
        + strings(&mut request.to.iter().map(String::as_str))
        + 4 * request.rcpt.len()
        + strings(&mut request.members.iter().map(|m| &**m))
        + request.body.get().len();
    let mut out = BytesMut::with_capacity(len);
    let flags = if request.dedupe { DEDUPE } else { 0 }
        | if request.from.is_some() { FROM } else { 0 }
        | if request.group.is_some() { GROUP } else { 0 };
    out.put_slice(&[MAGIC, ONE, flags]);
    out.put_u64_le(request.ts);
    put_str(&mut out, &request.id);
    for optional in [&request.from, &request.group].into_iter().flatten() {
        put_str(&mut out, optional);
    }
    put_len(&mut out, request.to.len());
    request.to.iter().for_each(|s| put_str(&mut out, s));
    put_len(&mut out, request.rcpt.len());
    request.rcpt.iter().for_each(|&i| put_len(&mut out, i));
    put_len(&mut out, request.members.len());
    request.members.iter().for_each(|s| put_str(&mut out, s));
    put_str(&mut out, request.body.get());
    debug_assert_eq!(out.len(), len, "the length computed up front");
    out.freeze()
}

/// Several compact requests as one batch.
pub(crate) fn join<'a>(requests: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> Bytes {
    let len: usize = requests.clone().map(|r| r.len() + 4).sum();
    let mut out = BytesMut::with_capacity(len + 6);
    out.put_slice(&[MAGIC, BATCH]);
    put_len(&mut out, requests.len());
    for request in requests {
        put_len(&mut out, request.len());
        out.put_slice(request);
    }
    out.freeze()
}

/// A decoded compact payload.
#[derive(Debug)]
pub(crate) enum Compact<'a> {
    One(DeliverRequest<'a>),
    /// Answered by an array of replies in the same order.
    Batch(Vec<DeliverRequest<'a>>),
}

/// A compact payload: one request, or the requests of a batch.
pub(crate) fn decode(payload: &[u8]) -> Result<Compact<'_>, FrameError> {
    let mut reader = Reader(payload);
    if reader.bytes(1)? != [MAGIC] {
        return Err(malformed("not a compact deliver request"));
    }
    match reader.bytes(1)?[0] {
        ONE => Ok(Compact::One(decode_one(reader)?)),
        BATCH => {
            let count = reader.len()?;
            let mut requests = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                let len = reader.len()?;
                let mut element = Reader(reader.bytes(len)?);
                if element.bytes(2)? != [MAGIC, ONE] {
                    return Err(malformed("a batch element that is not one request"));
                }
                requests.push(decode_one(element)?);
            }
            reader.end()?;
            Ok(Compact::Batch(requests))
        }
        other => Err(malformed(&format!("unknown compact form {other}"))),
    }
}

/// The rest of one request, after its first two bytes.
fn decode_one(mut reader: Reader<'_>) -> Result<DeliverRequest<'_>, FrameError> {
    let flags = reader.bytes(1)?[0];
    let ts = u64::from_le_bytes(reader.bytes(8)?.try_into().expect("8 bytes"));
    let id = reader.str()?;
    let from = (flags & FROM != 0).then(|| reader.str()).transpose()?;
    let group = (flags & GROUP != 0).then(|| reader.str()).transpose()?;
    let to = reader.list(|r| r.str().map(str::to_owned))?;
    let rcpt = reader.list(Reader::len)?;
    let members = reader.list(|r| r.str().map(Cow::Borrowed))?;
    // Checked like any body: a malformed one would reach clients as a broken frame.
    let body: &RawValue = serde_json::from_str(reader.str()?)
        .map_err(|e| malformed(&format!("body is not JSON: {e}")))?;
    reader.end()?;
    Ok(DeliverRequest {
        id: Cow::Borrowed(id),
        from: from.map(Cow::Borrowed),
        to: Cow::Owned(to),
        rcpt: Cow::Owned(rcpt),
        group: group.map(Cow::Borrowed),
        members,
        ts,
        body,
        dedupe: flags & DEDUPE != 0,
    })
}

fn put_len(out: &mut BytesMut, len: usize) {
    out.put_u32_le(u32::try_from(len).expect("deliver requests are far below 4 GiB"));
}

fn put_str(out: &mut BytesMut, s: &str) {
    put_len(out, s.len());
    out.put_slice(s.as_bytes());
}

fn malformed(why: &str) -> FrameError {
    FrameError::new(
        ErrorCode::BadFrame,
        format!("compact deliver request: {why}"),
    )
}

/// The unread rest of a payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn len(&mut self) -> Result<usize, FrameError> {
        let bytes = self.bytes(4)?.try_into().expect("4 bytes");
        Ok(u32::from_le_bytes(bytes) as usize)
    }

    fn str(&mut self) -> Result<&'a str, FrameError> {
        let len = self.len()?;
        std::str::from_utf8(self.bytes(len)?).map_err(|_| malformed("a string is not UTF-8"))
    }

    /// A counted list; the count is checked against what is left (every element takes at
    /// least four bytes), so a forged count allocates nothing large.
    fn list<T>(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Result<T, FrameError>,
    ) -> Result<Vec<T>, FrameError> {
        let count = self.len()?;
        if count > self.0.len() / 4 {
            return Err(malformed("a count longer than the payload"));
        }
        (0..count).map(|_| element(self)).collect()
    }

    fn end(&self) -> Result<(), FrameError> {
        match self.0 {
            [] => Ok(()),
            _ => Err(malformed("trailing bytes")),
        }
    }
}

#[cfg(test)]
mod tests;
