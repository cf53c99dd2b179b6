//! WebSocket frames as a server reads and writes them (RFC 6455 §5): headers parsed from
//! and written into `BytesMut` buffers, payloads unmasked in place, messages assembled
//! from fragments. No I/O here; [`super::socket`] feeds the bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub(super) const CONTINUATION: u8 = 0x0;
pub(super) const TEXT: u8 = 0x1;
pub(super) const BINARY: u8 = 0x2;
pub(super) const CLOSE: u8 = 0x8;
pub(super) const PING: u8 = 0x9;
pub(super) const PONG: u8 = 0xA;

/// Close codes (RFC 6455 §7.4.1).
pub(super) const PROTOCOL_ERROR: u16 = 1002;
pub(super) const INVALID_DATA: u16 = 1007;
pub(super) const TOO_BIG: u16 = 1009;

/// Why a client's bytes end the connection: the close code to answer and a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Violation {
    pub(super) code: u16,
    pub(super) reason: &'static str,
}

const fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

/// What the reader made of the bytes it had.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// A whole text message (not yet checked to be UTF-8).
    Text(Bytes),
    /// A whole binary message: not part of the protocol, a sign of life.
    Binary,
    Ping(Bytes),
    Pong,
    /// The client's close: its payload (a code and a reason, or nothing), to echo.
    Close(Bytes),
}

/// Reads frames out of a buffer, assembling fragmented messages.
#[derive(Debug)]
pub(super) struct Reader {
    /// The longest message taken; longer ones are a violation (1009).
    limit: usize,
    /// A fragmented message being assembled: its opcode and what came so far (boxed:
    /// rare, and every connection's task keeps this reader).
    partial: Option<Box<(u8, BytesMut)>>,
}

impl Reader {
    pub(super) fn new(limit: usize) -> Self {
        Reader {
            limit,
            partial: None,
        }
    }

    /// The next event in `buf`, consuming its bytes; `Ok(None)` when `buf` holds no whole
    /// frame yet (nothing is consumed then).
    pub(super) fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, Violation> {
        loop {
            let Some(header) = Header::parse(buf)? else {
                return Ok(None);
            };
            let so_far = self.partial.as_ref().map_or(0, |partial| partial.1.len());
            if header.opcode & 0x8 == 0 && so_far as u64 + header.len > self.limit as u64 {
                return Err(violation(TOO_BIG, "message too large"));
            }
            let len = header.len as usize;
            if buf.len() < header.size + len {
                // Room for the rest: one read may bring it all.
                buf.reserve(header.size + len - buf.len());
                return Ok(None);
            }
            buf.advance(header.size);
            let mut payload = buf.split_to(len);
            unmask(&mut payload, header.mask);
            if let Some(event) = self.take(header, payload)? {
                return Ok(Some(event));
            }
        }
    }

    /// What one whole frame means; `None` for a fragment that does not end its message.
    fn take(&mut self, header: Header, payload: BytesMut) -> Result<Option<Event>, Violation> {
        let message = |opcode, payload: BytesMut| match opcode {
            TEXT => Event::Text(payload.freeze()),
            _ => Event::Binary,
        };
        match header.opcode {
            TEXT | BINARY if self.partial.is_some() => Err(violation(
                PROTOCOL_ERROR,
                "a new message inside a fragmented one",
            )),
            TEXT | BINARY if header.fin => Ok(Some(message(header.opcode, payload))),
            TEXT | BINARY => {
                self.partial = Some(Box::new((header.opcode, payload)));
                Ok(None)
            }
            CONTINUATION => {
                let Some(mut partial) = self.partial.take() else {
                    return Err(violation(PROTOCOL_ERROR, "a continuation of nothing"));
                };
                partial.1.extend_from_slice(&payload);
                if !header.fin {
                    self.partial = Some(partial);
                    return Ok(None);
                }
                let (opcode, so_far) = *partial;
                Ok(Some(message(opcode, so_far)))
            }
            CLOSE if payload.len() == 1 => Err(violation(PROTOCOL_ERROR, "a close of one byte")),
            CLOSE => Ok(Some(Event::Close(payload.freeze()))),
            PING => Ok(Some(Event::Ping(payload.freeze()))),
            PONG => Ok(Some(Event::Pong)),
            _ => Err(violation(PROTOCOL_ERROR, "unknown opcode")),
        }
    }
}

/// A frame's header.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: u64,
    /// Bytes of the header itself.
    size: usize,
}

impl Header {
    /// The header at the start of `buf`, if it is all there.
    fn parse(buf: &[u8]) -> Result<Option<Header>, Violation> {
        let [first, second, ..] = *buf else {
            return Ok(None);
        };
        if first & 0x70 != 0 {
            return Err(violation(PROTOCOL_ERROR, "reserved bits set"));
        }
        if second & 0x80 == 0 {
            return Err(violation(PROTOCOL_ERROR, "an unmasked client frame"));
        }
        let (fin, opcode) = (first & 0x80 != 0, first & 0x0F);
        let (len, at) = match second & 0x7F {
            126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 if buf.len() >= 10 => {
                let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(violation(PROTOCOL_ERROR, "a length with its top bit set"));
                }
                (len, 10)
            }
            126 | 127 => return Ok(None),
            short => (u64::from(short), 2),
        };
        if opcode & 0x8 != 0 && (!fin || len > 125) {
            return Err(violation(
                PROTOCOL_ERROR,
                "a fragmented or long control frame",
            ));
        }
        let Some(mask) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        Ok(Some(Header {
            fin,
            opcode,
            mask: mask.try_into().expect("4 bytes"),
            len,
            size: at + 4,
        }))
    }
}

/// Unmasks `payload` in place, eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// Appends one unfragmented, unmasked frame (a server's) to `out`.
pub(super) fn write(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    out.put_u8(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.put_u8(len as u8),
        len @ 126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        len => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
    out.put_slice(payload);
}

/// Appends a close frame with `code` and `reason` to `out`.
pub(super) fn write_close(out: &mut BytesMut, code: u16, reason: &str) {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    write(out, CLOSE, &payload);
}

#[cfg(test)]
pub(super) mod tests;
