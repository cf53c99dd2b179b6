use super::*;

#[test]
fn parses_each_op() {
    match parse(r#"{"op":"login","user":"alice"}"#).unwrap() {
        Request::Login { user, token, .. } => {
            assert_eq!((user.unwrap().as_str(), token), ("alice", None))
        }
        other => panic!("{other:?}"),
    }
    match parse(r#"{"op":"login","token":"t"}"#).unwrap() {
        Request::Login { user, token, .. } => {
            assert_eq!((user, token.unwrap().as_str()), (None, "t"))
        }
        other => panic!("{other:?}"),
    }
    match parse(r#"{"op":"send","to":["a","b"],"id":"m1","body":{"x":[1, 2]}}"#).unwrap() {
        Request::Send { to, id, body, .. } => {
            assert_eq!(to, ["a", "b"]);
            assert_eq!(id.as_deref(), Some("m1"));
            // The body is the sender's bytes, spacing included.
            assert_eq!(body.get(), r#"{"x":[1, 2]}"#);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse(r#"{"op":"ping"}"#).unwrap(),
        Request::Ping { id: None }
    ));
}

#[test]
fn a_null_body_is_a_body() {
    match parse(r#"{"op":"send","to":["a"],"body":null}"#).unwrap() {
        Request::Send { body, .. } => assert_eq!(body.get(), "null"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn escaped_op_still_parses() {
    assert!(matches!(
        parse(r#"{"op":"p\u0069ng"}"#).unwrap(),
        Request::Ping { .. }
    ));
}

#[test]
fn mistakes_map_to_stable_codes() {
    let code = |f: &str| parse(f).unwrap_err().code;
    assert_eq!(code("not json"), ErrorCode::BadJson);
    assert_eq!(code(r#"{"op":"login""#), ErrorCode::BadJson);
    assert_eq!(code("[1,2]"), ErrorCode::BadFrame);
    assert_eq!(code(r#"{"op":"dance"}"#), ErrorCode::UnknownOp);
    assert_eq!(code(r#"{"user":"a"}"#), ErrorCode::BadFrame);
    assert_eq!(code(r#"{"op":"login"}"#), ErrorCode::BadFrame);
    assert_eq!(code(r#"{"op":"send","to":["a"]}"#), ErrorCode::BadFrame);
    assert_eq!(
        code(r#"{"op":"send","to":"a","body":1}"#),
        ErrorCode::BadFrame
    );
    assert_eq!(code(r#"{"op":1}"#), ErrorCode::BadFrame);
}

#[test]
fn errors_carry_the_frame_id() {
    let e = parse(r#"{"op":"send","id":"m7","to":["a"]}"#).unwrap_err();
    assert_eq!(e.id.as_deref(), Some("m7"));
}

#[test]
fn frames_encode_with_op_and_raw_body() {
    let body = RawValue::from_string(r#"{"k": "v"}"#.to_string()).unwrap();
    let to = vec!["bob".to_string()];
    let msg = Frame::Msg {
        id: "m1",
        from: Some("alice"),
        to: &to,
        group: None,
        broadcast: false,
        ts: 5,
        body: &body,
        seq: None,
    };
    let text = String::from_utf8(msg.encode().to_vec()).unwrap();
    assert_eq!(
        text,
        r#"{"op":"msg","id":"m1","from":"alice","to":["bob"],"ts":5,"body":{"k": "v"}}"#
    );
    let report = Report::direct(
        "m1".into(),
        [("bob".to_string(), Outcome::Delivered)].into(),
    );
    let text = Frame::Report { report: &report }.encode();
    assert_eq!(
        &text[..],
        br#"{"op":"report","id":"m1","status":{"bob":"delivered"}}"#
    );
    let incoming: Incoming = serde_json::from_slice(&text).unwrap();
    assert_eq!(incoming.status.unwrap()["bob"], Outcome::Delivered);
}

#[test]
fn routed_frames_fit_the_buffer_their_size_hint_allocates() {
    let to: Vec<String> = (0..50).map(|i| format!("user-{i}")).collect();
    let body = RawValue::from_string(format!(r#"{{"p":"{}"}}"#, "x".repeat(300))).unwrap();
    for receivers in [&to[..1], &to[..]] {
        let msg = Frame::Msg {
            id: "01J9ZV6Q8W0000000000000000",
            from: Some("alice"),
            to: receivers,
            group: None,
            broadcast: false,
            ts: u64::MAX,
            body: &body,
            seq: Some(u64::MAX),
        };
        assert!(msg.encode().len() <= msg.size_hint(), "{receivers:?}");
        let status = receivers
            .iter()
            .map(|r| (r.clone(), Outcome::Unavailable))
            .collect();
        let report = Report::direct("01J9ZV6Q8W0000000000000000".into(), status);
        let frame = Frame::Report { report: &report };
        assert!(frame.encode().len() <= frame.size_hint());
    }
}
