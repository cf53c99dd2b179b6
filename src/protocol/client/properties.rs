use super::*;
use proptest::prelude::*;

/// JSON values shaped like frames: objects with a known or unknown `op` and fields of
/// any type.
fn frame_like() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::hash_map(".{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    let word = |w: &'static str| Just(w.to_string());
    let op = prop_oneof![word("login"), word("send"), word("ping"), ".{0,8}"];
    let field = prop_oneof![
        word("user"),
        word("token"),
        word("to"),
        word("id"),
        word("body"),
        ".{0,5}"
    ];
    (op, prop::collection::vec((field, value), 0..5)).prop_map(|(op, fields)| {
        let mut object = serde_json::Map::new();
        object.insert("op".into(), op.into());
        for (k, v) in fields {
            object.insert(k, v);
        }
        serde_json::Value::Object(object)
    })
}

proptest! {
    #[test]
    fn parse_never_panics_on_any_text(text in ".{0,200}") {
        let _ = parse(&text);
    }

    #[test]
    fn parse_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn frame_shaped_json_parses_or_gets_a_stable_code(frame in frame_like()) {
        match parse(&frame.to_string()) {
            Ok(Request::Send { body, .. }) => {
                // The body is exactly the sender's JSON value.
                let sent = &frame["body"];
                prop_assert_eq!(&serde_json::from_str::<serde_json::Value>(body.get()).unwrap(), sent);
            }
            Ok(_) => {}
            Err(e) => prop_assert!(matches!(e.code, ErrorCode::BadFrame | ErrorCode::UnknownOp | ErrorCode::BadJson)),
        }
    }

    #[test]
    fn nats_payloads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = serde_json::from_slice::<crate::protocol::nats::SendRequest<'_>>(&bytes);
        let _ = serde_json::from_slice::<crate::protocol::nats::DeliverRequest<'_>>(&bytes);
        let _ = crate::protocol::body_from_bytes(&bytes);
        let _ = crate::protocol::nats::decode_reply::<crate::protocol::nats::LookupReply>(&bytes);
    }

    #[test]
    fn any_valid_user_id_round_trips_through_its_token(id in "[^\\p{Cc}]{1,40}") {
        let user = crate::ident::UserId::new(&id).unwrap();
        let token = user.token();
        prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-=".contains(&b)));
        prop_assert_eq!(crate::ident::UserId::from_token(&token).unwrap(), user);
    }

    #[test]
    fn from_token_never_panics(token in ".{0,60}") {
        let _ = crate::ident::UserId::from_token(&token);
    }
}

proptest! {
    /// The hand-written `msg` and `report` frames are byte for byte what serde writes.
    #[test]
    fn routed_frames_are_written_as_serde_writes_them(
        id in ".{0,10}",
        from in proptest::option::of(".{0,6}"),
        to in prop::collection::vec(".{0,6}", 0..4),
        group in proptest::option::of("[a-z\"\\\\]{0,6}"),
        broadcast: bool,
        ts: u64,
        seq in proptest::option::of(any::<u64>()),
        text in ".{0,10}",
        counted: bool,
    ) {
        let body = RawValue::from_string(serde_json::to_string(&text).unwrap()).unwrap();
        let msg = Frame::Msg {
            id: &id,
            from: from.as_deref(),
            to: &to,
            group: group.as_deref(),
            broadcast,
            ts,
            body: &body,
            seq,
        };
        prop_assert_eq!(&msg.encode()[..], &serde_json::to_vec(&msg).unwrap()[..]);
        let outcomes = [Outcome::Delivered, Outcome::InboxFull, Outcome::Rejected];
        let status = to.iter().enumerate().map(|(i, u)| (u.clone(), outcomes[i % 3])).collect();
        let report = Report {
            id,
            status,
            group,
            counts: counted.then(|| Counts { delivered: 2, offline: 1, ..Counts::default() }),
        };
        let frame = Frame::Report { report: &report };
        prop_assert_eq!(&frame.encode()[..], &serde_json::to_vec(&frame).unwrap()[..]);
    }
}
