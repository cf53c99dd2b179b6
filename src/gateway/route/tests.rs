#[test]
fn a_first_attempt_without_answer_is_never_reported_offline() {
    use super::Attempt::*;
    assert_eq!(Failed.then(NoRoute), Failed);
    assert_eq!(Failed.then(Absent), Failed);
    assert_eq!(Failed.then(Delivered), Delivered);
    assert_eq!(Absent.then(NoRoute), NoRoute);
    assert_eq!(Absent.then(Failed), Failed);
    assert_eq!(NoRoute.then(Absent).outcome(), super::Outcome::Offline);
}

use super::*;

fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

#[test]
fn receivers_are_distinct_and_valid_in_the_senders_order() {
    for repeat in [1, 10] {
        // Short lists are searched, long ones (over 16) go through a set.
        let mut to: Vec<String> = Vec::new();
        for _ in 0..repeat {
            to.extend(["b", "a", "", "b", "toolong", ""].map(String::from));
        }
        let (valid, rejected) = receivers(&to, 5);
        assert_eq!(valid, [user("b"), user("a")]);
        assert_eq!(rejected, ["", "toolong"]);
    }
}

#[test]
fn groups_receiver_positions_once_per_gateway() {
    let g1 = GatewayId::new("g1").unwrap();
    let g2 = GatewayId::new("g2").unwrap();
    let routes: Vec<Option<Route>> = vec![
        Some(Route::from(vec![g1.clone()])),
        Some(Route::from(vec![g1.clone(), g2.clone()])),
        None,
    ];
    let grouped = group_by_gateway(&routes);
    assert_eq!(grouped, [(&g1, vec![0, 1]), (&g2, vec![1])]);

    // Past eight destinations the same grouping comes from an index.
    let many: Vec<GatewayId> = (0..20)
        .map(|k| GatewayId::new(&format!("g{k}")).unwrap())
        .collect();
    let routes: Vec<Option<Route>> = (0..60)
        .map(|i| Some(Route::from(vec![many[i % 20].clone()])))
        .collect();
    let grouped = group_by_gateway(&routes);
    assert_eq!(grouped.len(), 20);
    for (k, (gateway, rcpt)) in grouped.iter().enumerate() {
        assert_eq!(**gateway, many[k]);
        assert_eq!(*rcpt, vec![k, k + 20, k + 40]);
    }
}

#[test]
fn group_members_on_several_gateways_are_routed_once_to_each() {
    let reply = ResolveReply {
        group: "g".into(),
        size: 3,
        gateways: [
            ("g1".to_string(), vec!["a".to_string(), "b".to_string()]),
            ("g2".to_string(), vec!["b".to_string(), "c".to_string()]),
        ]
        .into(),
        offline: 0,
        offline_members: Vec::new(),
    };
    let (users, routes) = member_routes(&reply);
    assert_eq!(users, [user("a"), user("b"), user("c")]);
    let names = |r: &Option<Route>| -> Vec<String> {
        r.as_ref().unwrap().iter().map(|g| g.to_string()).collect()
    };
    assert_eq!(names(&routes[0]), ["g1"]);
    assert_eq!(names(&routes[1]), ["g1", "g2"]);
    assert_eq!(names(&routes[2]), ["g2"]);
}

#[test]
fn delivered_anywhere_wins_over_absent_and_failed() {
    let users = [user("a"), user("b")];
    let mut results = [Attempt::Absent, Attempt::Absent];
    merge(&mut results, &users, &[0, 1], Err(RequestFailure::TimedOut));
    let reply = DeliverReply {
        delivered: vec!["a".into()],
        absent: vec!["b".into()],
    };
    merge(&mut results, &users, &[0, 1], Ok(reply));
    assert_eq!(results, [Attempt::Delivered, Attempt::Failed]);
    merge(
        &mut results,
        &users,
        &[1],
        Err(RequestFailure::NoResponders),
    );
    assert_eq!(results[1], Attempt::Failed);

    // A long reply is looked up through a set: same answer.
    let many: Vec<UserId> = (0..20).map(|i| user(&format!("u{i}"))).collect();
    let mut results = vec![Attempt::Absent; 20];
    let reply = DeliverReply {
        delivered: (0..20).step_by(2).map(|i| format!("u{i}").into()).collect(),
        absent: Vec::new(),
    };
    let rcpt: Vec<usize> = (0..20).collect();
    merge(&mut results, &many, &rcpt, Ok(reply));
    for (i, r) in results.iter().enumerate() {
        let want = if i % 2 == 0 {
            Attempt::Delivered
        } else {
            Attempt::Absent
        };
        assert_eq!(*r, want, "receiver {i}");
    }
}

#[test]
fn deliver_requests_name_direct_receivers_by_position_and_members_by_id() {
    let message = Message {
        id: MessageId::new("m1").unwrap(),
        from: Some("s".into()),
        to: vec!["a".into(), "b".into(), "c".into()],
        body: RawValue::from_string("{}".into()).unwrap(),
        dedupe: false,
    };
    let users = [user("a"), user("b"), user("c")];
    let direct = Envelope {
        message: &message,
        to: Cow::Borrowed(&message.to),
        group: None,
        ts: 7,
    };
    let text = String::from_utf8(encode(&direct.request(&users, &[0, 2])).to_vec()).unwrap();
    assert_eq!(
        text,
        r#"{"id":"m1","from":"s","to":["a","b","c"],"rcpt":[0,2],"ts":7,"body":{}}"#
    );
    let group = Envelope {
        message: &message,
        to: Cow::Borrowed(&[]),
        group: Some("g"),
        ts: 7,
    };
    let text = String::from_utf8(encode(&group.request(&users, &[1, 2])).to_vec()).unwrap();
    assert_eq!(
        text,
        r#"{"id":"m1","from":"s","to":[],"group":"g","members":["b","c"],"ts":7,"body":{}}"#
    );
    let back: DeliverRequest<'_> = serde_json::from_str(&text).unwrap();
    assert_eq!(back.members, ["b", "c"]);
    assert!(
        matches!(back.id, Cow::Borrowed("m1")),
        "ids borrow from the payload"
    );
}
