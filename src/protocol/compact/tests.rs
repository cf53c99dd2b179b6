use proptest::prelude::*;

use super::*;
use crate::protocol::nats::encode as json;

fn request<'a>(
    strings: &'a [String],
    rcpt: &'a [usize],
    body: &'a RawValue,
    group: bool,
) -> DeliverRequest<'a> {
    DeliverRequest {
        id: Cow::Borrowed(&strings[0]),
        from: Some(Cow::Borrowed(&strings[1])),
        to: Cow::Borrowed(if group { &[] } else { &strings[2..] }),
        rcpt: Cow::Borrowed(if group { &[] } else { rcpt }),
        group: group.then(|| Cow::Borrowed(strings[1].as_str())),
        members: if group {
            strings[2..]
                .iter()
                .map(|s| Cow::Borrowed(s.as_str()))
                .collect()
        } else {
            Vec::new()
        },
        ts: 1_795_607_282_337,
        body,
        dedupe: group,
    }
}

#[test]
fn a_request_reads_back_as_its_json_form_says() {
    let strings: Vec<String> = ["m-1", "alice", "a.b", "张伟", "c\"d"]
        .map(String::from)
        .into();
    let body = RawValue::from_string(r#"{"x": [1, "\u00e9"]}"#.into()).unwrap();
    for group in [false, true] {
        let sent = request(&strings, &[0, 2], &body, group);
        let compact = encode(&sent);
        assert!(is_compact(&compact) && !is_compact(&json(&sent)));
        let Compact::One(got) = decode(&compact).unwrap() else {
            panic!("one request")
        };
        assert_eq!(json(&got), json(&sent), "group: {group}");
        assert_eq!(got.body.get(), body.get(), "the body's bytes as they were");
    }
}

#[test]
fn a_batch_reads_back_in_order() {
    let strings: Vec<String> = ["m-1", "alice", "bob"].map(String::from).into();
    let body = RawValue::from_string("1".into()).unwrap();
    let one = encode(&request(&strings, &[0], &body, false));
    let two = encode(&request(&strings, &[], &body, true));
    let batch = join([&one[..], &two[..]].into_iter());
    let Compact::Batch(got) = decode(&batch).unwrap() else {
        panic!("a batch")
    };
    assert_eq!(got.len(), 2);
    assert!(got[0].group.is_none() && got[1].group.is_some());
    let empty = join(std::iter::empty());
    assert!(matches!(decode(&empty).unwrap(), Compact::Batch(b) if b.is_empty()));
}

#[test]
fn malformed_payloads_are_bad_frames_and_never_panic() {
    let strings: Vec<String> = ["m-1", "alice", "bob"].map(String::from).into();
    let body = RawValue::from_string(r#""hi""#.into()).unwrap();
    let whole = encode(&request(&strings, &[0], &body, false));
    for cut in 0..whole.len() {
        let error = decode(&whole[..cut]).unwrap_err();
        assert_eq!(error.code, ErrorCode::BadFrame, "cut at {cut}");
    }
    let mut trailing = whole.to_vec();
    trailing.push(b' ');
    assert!(decode(&trailing).is_err());
    let mut not_json = whole.to_vec();
    let at = not_json.len() - 2;
    not_json[at] = b'x'; // `"hx"` → `"hx` with a stray byte: no longer JSON
    not_json.truncate(not_json.len() - 1);
    assert!(decode(&not_json).is_err());
    // A forged count allocates nothing: it is longer than the payload.
    let mut forged = vec![MAGIC, BATCH];
    forged.extend(u32::MAX.to_le_bytes());
    assert!(decode(&forged).is_err());
    assert!(decode(&[MAGIC, 9]).is_err());
    assert!(decode(&[MAGIC, BATCH, 1, 0, 0, 0, 2, 0, 0, 0, MAGIC, BATCH]).is_err());
}

proptest! {
    #[test]
    fn any_request_reads_back_as_itself(
        strings in prop::collection::vec(".{0,12}", 2..6),
        rcpt in prop::collection::vec(0usize..1000, 0..4),
        group: bool,
        text in ".{0,20}",
    ) {
        let body = RawValue::from_string(serde_json::to_string(&text).unwrap()).unwrap();
        let sent = request(&strings, &rcpt, &body, group);
        let compact = encode(&sent);
        let Compact::One(got) = decode(&compact).unwrap() else {
            panic!("one request")
        };
        prop_assert_eq!(json(&got), json(&sent));
    }
}

#[test]
fn the_smallest_request_is_laid_out_as_documented() {
    let bytes = b"\0\x01\0\x01\0\0\0\0\0\0\0\x01\0\0\0x\0\0\0\0\0\0\0\0\0\0\0\0\x01\0\0\x001";
    let Compact::One(request) = decode(bytes).unwrap() else {
        panic!("one request")
    };
    assert_eq!(
        (&*request.id, request.ts, request.body.get()),
        ("x", 1, "1")
    );
    assert!(request.to.is_empty() && request.from.is_none() && !request.dedupe);
}
