//! The NATS client protocol, as far as [`super::Wire`] speaks it: the server's operations
//! read in place from one buffer, the client's written straight into the outgoing one.
//! (<https://docs.nats.io/reference/reference-protocols/nats-protocol>; nats-server writes
//! its operation names in upper case, and so are they read here.)

use bytes::{Bytes, BytesMut};

/// Longest control line accepted (nats-server's own `max_control_line` default is 4 KiB;
/// an INFO can be longer: it lists the cluster's URLs).
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Largest message taken: nats-server's own ceiling for `max_payload`, and room for
/// headers. A larger size is a broken stream, not a message to allocate for.
const MAX_MESSAGE: usize = 72 * 1024 * 1024;

/// One operation from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ServerOp {
    Info(Bytes),
    Msg(Msg),
    Ping,
    Pong,
    Ok,
    Err(String),
}

/// A `MSG` or `HMSG`: the whole operation in one [`Bytes`], its parts as ranges of it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Msg {
    frame: Bytes,
    subject: std::ops::Range<usize>,
    reply: Option<std::ops::Range<usize>>,
    pub(crate) sid: u64,
    /// The status of an `HMSG` whose headers carry one (`NATS/1.0 503`: no responders).
    pub(crate) status: Option<u16>,
    payload: std::ops::Range<usize>,
}

impl Msg {
    /// Empty if it is not UTF-8 (checked only when read: most messages' subjects are not).
    pub(crate) fn subject(&self) -> &str {
        text(&self.frame[self.subject.clone()])
    }

    /// `None` if there is none, or it is not UTF-8.
    pub(crate) fn reply(&self) -> Option<&str> {
        let reply = &self.frame[self.reply.clone()?];
        std::str::from_utf8(reply).ok()
    }

    pub(crate) fn payload(&self) -> Bytes {
        self.frame.slice(self.payload.clone())
    }
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// Why the server's byte stream cannot be read on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ProtoError {
    #[error("a control line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("unknown operation {0:?}")]
    Unknown(String),
    #[error("malformed {0} line")]
    Malformed(&'static str),
}

/// The next whole operation at the front of `buf`, taken off it; `None` when more bytes
/// must be read first.
pub(crate) fn next(buf: &mut BytesMut) -> Result<Option<ServerOp>, ProtoError> {
    let Some(end) = find_crlf(buf) else {
        return if buf.len() > MAX_LINE {
            Err(ProtoError::LineTooLong)
        } else {
            Ok(None)
        };
    };
    let line = &buf[..end];
    let (op, rest) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(at) => (&line[..at], &line[at + 1..]),
        None => (line, &line[line.len()..]),
    };
    let simple = |buf: &mut BytesMut, op| {
        let _ = buf.split_to(end + 2);
        Ok(Some(op))
    };
    match op {
        b"MSG" => msg(buf, end, false),
        b"HMSG" => msg(buf, end, true),
        b"PING" => simple(buf, ServerOp::Ping),
        b"PONG" => simple(buf, ServerOp::Pong),
        b"+OK" => simple(buf, ServerOp::Ok),
        b"-ERR" => {
            let text = String::from_utf8_lossy(rest).trim().to_owned();
            simple(buf, ServerOp::Err(text))
        }
        b"INFO" => {
            let start = end - rest.len();
            let mut line = buf.split_to(end + 2).freeze();
            line.truncate(end);
            Ok(Some(ServerOp::Info(line.slice(start..))))
        }
        other => Err(ProtoError::Unknown(
            String::from_utf8_lossy(&other[..other.len().min(32)]).into_owned(),
        )),
    }
}

/// `MSG <subject> <sid> [reply] <size>` or `HMSG <subject> <sid> [reply] <hsize> <size>`,
/// followed by the payload and CRLF: taken off `buf` once all of it is there.
fn msg(buf: &mut BytesMut, end: usize, headers: bool) -> Result<Option<ServerOp>, ProtoError> {
    let what = if headers { "HMSG" } else { "MSG" };
    let malformed = || ProtoError::Malformed(what);
    let line = &buf[..end];
    let mut fields: [std::ops::Range<usize>; 6] = Default::default();
    let mut count = 0;
    let mut at = if headers { 5 } else { 4 };
    while at < end {
        let len = memchr::memchr2(b' ', b'\t', &line[at..]).unwrap_or(end - at);
        if len > 0 {
            *fields.get_mut(count).ok_or_else(malformed)? = at..at + len;
            count += 1;
        }
        at += len + 1;
    }
    let sizes = if headers { 2 } else { 1 };
    if count < 2 + sizes || count > 3 + sizes {
        return Err(malformed());
    }
    let number = |r: &std::ops::Range<usize>| {
        crate::protocol::decimal(&line[r.clone()]).ok_or_else(malformed)
    };
    let size = usize::try_from(number(&fields[count - 1])?).map_err(|_| malformed())?;
    let header_size = if headers {
        usize::try_from(number(&fields[count - 2])?).map_err(|_| malformed())?
    } else {
        0
    };
    if header_size > size || size > MAX_MESSAGE {
        return Err(malformed());
    }
    let reply = (count == 3 + sizes).then(|| fields[2].clone());
    let sid = number(&fields[1])?;
    let body = end + 2;
    let total = body + size + 2;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    if &buf[total - 2..total] != b"\r\n" {
        return Err(malformed());
    }
    let status = headers
        .then(|| status(&buf[body..body + header_size]))
        .flatten();
    let frame = buf.split_to(total).freeze();
    Ok(Some(ServerOp::Msg(Msg {
        frame,
        subject: fields[0].clone(),
        reply,
        sid,
        status,
        payload: body + header_size..body + size,
    })))
}

/// The status code of a header block `NATS/1.0 503 ...`, if it has one.
fn status(headers: &[u8]) -> Option<u16> {
    let line = headers.strip_prefix(b"NATS/1.0")?;
    let code = line.get(1..4)?;
    (line.first() == Some(&b' ') && code.iter().all(u8::is_ascii_digit))
        .then(|| code.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0')))
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let at = from + memchr::memchr(b'\n', &buf[from..])?;
        if at > 0 && buf[at - 1] == b'\r' {
            return Some(at - 1);
        }
        from = at + 1;
    }
}

/// `PUB <subject> [reply] <size>\r\n<payload>\r\n`, the payload in `parts` of `size` bytes
/// in all.
pub(crate) fn write_pub(
    out: &mut Vec<u8>,
    subject: &str,
    reply: Option<&str>,
    size: usize,
    parts: &[&[u8]],
) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(size);
    out.reserve(subject.len() + reply.map_or(0, str::len) + digits.len() + size + 10);
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    if let Some(reply) = reply {
        out.extend_from_slice(reply.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(digits.as_bytes());
    out.extend_from_slice(b"\r\n");
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

/// `SUB <subject> <sid>\r\n`
pub(crate) fn write_sub(out: &mut Vec<u8>, subject: &str, sid: u64) {
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject.as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(itoa::Buffer::new().format(sid).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `UNSUB <sid>\r\n`
pub(crate) fn write_unsub(out: &mut Vec<u8>, sid: u64) {
    out.extend_from_slice(b"UNSUB ");
    out.extend_from_slice(itoa::Buffer::new().format(sid).as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub(crate) const PING: &[u8] = b"PING\r\n";
pub(crate) const PONG: &[u8] = b"PONG\r\n";

/// A subject or reply subject the server would take: not empty, no whitespace (nor any
/// other control character).
pub(crate) fn valid_subject(subject: &str) -> bool {
    // A fold without an early exit: the compiler checks many bytes per instruction.
    let controls = subject.bytes().fold(0u8, |n, b| n | u8::from(b <= b' '));
    !subject.is_empty() && controls == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> (Vec<ServerOp>, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let mut ops = Vec::new();
        while let Some(op) = next(&mut buf).unwrap() {
            ops.push(op);
        }
        (ops, buf)
    }

    #[test]
    fn messages_are_read_whole_with_their_parts() {
        let (ops, rest) =
            all(b"MSG a.b 7 5\r\nhello\r\nMSG x 1 r.9 0\r\n\r\nPING\r\nMSG y 2 3\r\nab");
        assert_eq!(ops.len(), 3);
        let ServerOp::Msg(m) = &ops[0] else { panic!() };
        assert_eq!((m.subject(), m.reply(), m.sid), ("a.b", None, 7));
        assert_eq!(&m.payload()[..], b"hello");
        let ServerOp::Msg(m) = &ops[1] else { panic!() };
        assert_eq!((m.subject(), m.reply(), m.sid), ("x", Some("r.9"), 1));
        assert!(m.payload().is_empty());
        assert_eq!(ops[2], ServerOp::Ping);
        assert_eq!(&rest[..], b"MSG y 2 3\r\nab", "an incomplete message waits");
    }

    #[test]
    fn a_payload_may_hold_crlf() {
        let (ops, _) = all(b"MSG s 1 6\r\na\r\nb\r\n\r\nPONG\r\n");
        let ServerOp::Msg(m) = &ops[0] else { panic!() };
        assert_eq!(&m.payload()[..], b"a\r\nb\r\n");
        assert_eq!(ops[1], ServerOp::Pong);
    }

    #[test]
    fn headers_carry_the_no_responders_status() {
        let headers = b"NATS/1.0 503\r\n\r\n";
        let mut bytes =
            format!("HMSG _INBOX.x.4 3 {} {}\r\n", headers.len(), headers.len()).into_bytes();
        bytes.extend_from_slice(headers);
        bytes.extend_from_slice(b"\r\nHMSG s 1 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
        let (ops, rest) = all(&bytes);
        assert!(rest.is_empty());
        let ServerOp::Msg(m) = &ops[0] else { panic!() };
        assert_eq!((m.subject(), m.status), ("_INBOX.x.4", Some(503)));
        assert!(m.payload().is_empty());
        let ServerOp::Msg(m) = &ops[1] else { panic!() };
        assert_eq!((m.reply(), m.status), (Some("r"), None));
        assert_eq!(&m.payload()[..], b"hi");
    }

    #[test]
    fn control_lines_are_told_apart() {
        let (ops, _) = all(b"INFO {\"max_payload\":9}\r\n+OK\r\n-ERR 'Permissions Violation'\r\n");
        assert_eq!(
            ops,
            [
                ServerOp::Info(Bytes::from_static(b"{\"max_payload\":9}")),
                ServerOp::Ok,
                ServerOp::Err("'Permissions Violation'".into()),
            ]
        );
    }

    #[test]
    fn bad_input_is_refused() {
        for bad in [
            &b"MSG a\r\n"[..],
            b"MSG a 1 2 3 4\r\n",
            b"MSG a x 1\r\n",
            b"MSG a 1 -1\r\n",
            b"HMSG a 1 5 2\r\n",
            b"MSG a 1 2\r\nabcd\r\n",
            b"MSG a 1 99999999999\r\n",
            b"WHAT\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                next(&mut buf).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = BytesMut::from(&vec![b'x'; MAX_LINE + 1][..]);
        assert_eq!(next(&mut long), Err(ProtoError::LineTooLong));
    }

    #[test]
    fn client_operations_are_written_as_the_protocol_says() {
        let mut out = Vec::new();
        write_pub(
            &mut out,
            "mrc.gw.b.deliver",
            Some("mrc.gw.a.replies.12"),
            2,
            &[b"{", b"}"],
        );
        write_pub(&mut out, "s", None, 0, &[]);
        write_sub(&mut out, "mrc.gw.a.replies.*", 3);
        write_unsub(&mut out, 3);
        assert_eq!(
            &out[..],
            &b"PUB mrc.gw.b.deliver mrc.gw.a.replies.12 2\r\n{}\r\nPUB s 0\r\n\r\nSUB mrc.gw.a.replies.* 3\r\nUNSUB 3\r\n"[..]
        );
        assert!(valid_subject("a.b") && !valid_subject("a b") && !valid_subject(""));
    }
}
