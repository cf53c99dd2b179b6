use proptest::prelude::*;

use super::*;

/// A client's frame: `first` is the FIN bit and opcode, the payload masked with `mask`.
pub(in crate::gateway::listener::ws) fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut out = BytesMut::new();
    write(&mut out, 0, payload);
    let mut bytes = out.to_vec();
    bytes[0] = first;
    bytes[1] |= 0x80;
    let at = bytes.len() - payload.len();
    let masked: Vec<u8> = payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    bytes.truncate(at);
    bytes.extend_from_slice(&mask);
    bytes.extend_from_slice(&masked);
    bytes
}

fn read_all(reader: &mut Reader, bytes: &[u8]) -> Result<Vec<Event>, Violation> {
    let mut buf = BytesMut::from(bytes);
    let mut events = Vec::new();
    while let Some(event) = reader.next(&mut buf)? {
        events.push(event);
    }
    assert!(buf.is_empty(), "{} bytes left", buf.len());
    Ok(events)
}

fn text(s: &str) -> Event {
    Event::Text(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn a_frame_is_taken_only_once_all_of_it_is_there() {
    for len in [0, 1, 125, 126, 300, 70_000] {
        let payload = vec![b'a'; len];
        let frame = client_frame(0x80 | TEXT, &payload);
        let mut reader = Reader::new(1 << 20);
        for cut in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(reader.next(&mut buf), Ok(None), "{len} bytes cut at {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed");
        }
        let expected = Event::Text(Bytes::from(payload));
        assert_eq!(read_all(&mut reader, &frame), Ok(vec![expected]));
    }
}

#[test]
fn unmasking_matches_the_byte_by_byte_rule() {
    let mask = [1, 2, 3, 250];
    for len in 0..40 {
        let plain: Vec<u8> = (0..len as u8).collect();
        let mut data = plain.clone();
        unmask(&mut data, mask);
        let expected: Vec<u8> = plain
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(data, expected);
    }
}

#[test]
fn fragments_make_one_message_and_control_frames_may_come_between() {
    let mut bytes = client_frame(TEXT, b"he");
    bytes.extend(client_frame(0x80 | PING, b"p"));
    bytes.extend(client_frame(CONTINUATION, b"ll"));
    bytes.extend(client_frame(0x80 | CONTINUATION, b"o"));
    bytes.extend(client_frame(0x80 | BINARY, b"\x00"));
    bytes.extend(client_frame(0x80 | PONG, b""));
    bytes.extend(client_frame(0x80 | CLOSE, &1000u16.to_be_bytes()));
    let events = read_all(&mut Reader::new(100), &bytes).unwrap();
    let close = Event::Close(Bytes::copy_from_slice(&1000u16.to_be_bytes()));
    let ping = Event::Ping(Bytes::from_static(b"p"));
    assert_eq!(
        events,
        [ping, text("hello"), Event::Binary, Event::Pong, close]
    );
}

#[test]
fn broken_frames_are_violations_with_their_codes() {
    let mut unmasked = client_frame(0x80 | TEXT, b"x");
    unmasked[1] &= 0x7F;
    let mut top_bit = vec![0x80 | TEXT, 0x80 | 127];
    top_bit.extend_from_slice(&(1u64 << 63).to_be_bytes());
    let cases: [(Vec<u8>, u16); 9] = [
        (client_frame(0xC0 | TEXT, b"x"), PROTOCOL_ERROR),
        (unmasked, PROTOCOL_ERROR),
        (client_frame(PING, b"x"), PROTOCOL_ERROR),
        (client_frame(0x80 | PING, &[0; 126]), PROTOCOL_ERROR),
        (client_frame(0x80 | CONTINUATION, b"x"), PROTOCOL_ERROR),
        (
            [client_frame(TEXT, b"x"), client_frame(0x80 | TEXT, b"y")].concat(),
            PROTOCOL_ERROR,
        ),
        (client_frame(0x80 | 0x3, b"x"), PROTOCOL_ERROR),
        (client_frame(0x80 | CLOSE, b"x"), PROTOCOL_ERROR),
        (top_bit, PROTOCOL_ERROR),
    ];
    for (i, (bytes, code)) in cases.into_iter().enumerate() {
        let mut buf = BytesMut::from(&bytes[..]);
        let mut reader = Reader::new(100);
        let outcome = loop {
            match reader.next(&mut buf) {
                Ok(Some(_)) => continue,
                other => break other,
            }
        };
        assert_eq!(outcome.map_err(|v| v.code), Err(code), "case {i}");
    }
}

#[test]
fn the_limit_counts_the_fragments_so_far_and_is_checked_before_the_payload_comes() {
    let mut reader = Reader::new(10);
    assert_eq!(
        read_all(&mut reader, &client_frame(0x80 | TEXT, &[b'a'; 10])),
        Ok(vec![text("aaaaaaaaaa")])
    );
    // Only the header of a frame too large: refused before its payload is awaited.
    let header = &client_frame(0x80 | TEXT, &[b'a'; 11])[..6];
    let refused = reader.next(&mut BytesMut::from(header));
    assert_eq!(refused.map_err(|v| v.code), Err(TOO_BIG));
    let mut reader = Reader::new(10);
    let mut bytes = client_frame(TEXT, &[b'a'; 6]);
    bytes.extend(client_frame(0x80 | CONTINUATION, &[b'a'; 5]));
    let refused = read_all(&mut reader, &bytes);
    assert_eq!(refused.map_err(|v| v.code), Err(TOO_BIG));
}

#[test]
fn server_frames_use_the_shortest_length_form() {
    for (len, header) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
        let mut out = BytesMut::new();
        write(&mut out, TEXT, &vec![b'z'; len]);
        assert_eq!(out.len(), header + len, "{len} bytes");
        assert_eq!(out[0], 0x80 | TEXT);
        assert_eq!(out[1] & 0x80, 0, "server frames are not masked");
    }
    let mut out = BytesMut::new();
    write_close(&mut out, 1008, "idle");
    assert_eq!(&out[..], b"\x88\x06\x03\xf0idle");
}

/// One client message and how it travels: as text or binary, in fragments of these sizes,
/// with a ping before it.
#[derive(Debug, Clone)]
struct Sent {
    text: bool,
    payload: Vec<u8>,
    fragments: Vec<usize>,
    ping: bool,
}

fn sent() -> impl Strategy<Value = Sent> {
    (
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(1usize..100, 0..4),
        any::<bool>(),
    )
        .prop_map(|(text, payload, fragments, ping)| Sent {
            text,
            payload,
            fragments,
            ping,
        })
}

/// The frames of `sent`: the payload cut at the fragment sizes, control frames between.
fn frames_of(sent: &Sent) -> Vec<u8> {
    let mut bytes = Vec::new();
    if sent.ping {
        bytes.extend(client_frame(0x80 | PING, b"p"));
    }
    let mut rest = &sent.payload[..];
    let mut opcode = if sent.text { TEXT } else { BINARY };
    for &size in &sent.fragments {
        let (head, tail) = rest.split_at(size.min(rest.len()));
        bytes.extend(client_frame(opcode, head));
        bytes.extend(client_frame(0x80 | PONG, b""));
        (rest, opcode) = (tail, CONTINUATION);
    }
    bytes.extend(client_frame(0x80 | opcode, rest));
    bytes
}

proptest! {
    #[test]
    fn messages_read_back_whatever_the_fragments_and_the_reads(
        messages in prop::collection::vec(sent(), 1..5),
        reads in prop::collection::vec(1usize..200, 1..50),
    ) {
        let bytes: Vec<u8> = messages.iter().flat_map(frames_of).collect();
        let mut expected = Vec::new();
        for sent in &messages {
            if sent.ping {
                expected.push(Event::Ping(Bytes::from_static(b"p")));
            }
            expected.extend(sent.fragments.iter().map(|_| Event::Pong));
            expected.push(match sent.text {
                true => Event::Text(Bytes::from(sent.payload.clone())),
                false => Event::Binary,
            });
        }
        // The bytes arrive in reads of the given sizes (the last size repeats).
        let (mut reader, mut buf, mut got, mut at) = (Reader::new(1 << 16), BytesMut::new(), Vec::new(), 0);
        let mut sizes = reads.iter().copied().chain(std::iter::repeat(*reads.last().unwrap()));
        while at < bytes.len() {
            let end = (at + sizes.next().unwrap()).min(bytes.len());
            buf.extend_from_slice(&bytes[at..end]);
            at = end;
            while let Some(event) = reader.next(&mut buf).unwrap() {
                got.push(event);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_yield_a_message_over_the_limit(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut reader = Reader::new(64);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(event)) = reader.next(&mut buf) {
            if let Event::Text(text) = event {
                prop_assert!(text.len() <= 64);
            }
        }
    }
}
