//! `mrc bench` against a real cluster, as `scripts/bench.sh` runs it: every message the
//! load sends arrives exactly once and every report says `delivered` (or, for the inbox,
//! `stored`, and every stored message arrives once at login). The bench prints timings;
//! this test asserts only counts.

use std::process::Command;

use serde_json::Value;

use crate::support::cluster::Cluster;

/// Runs `mrc bench` with `args` against `cluster`'s gateways; its JSON result lines.
fn bench(cluster: &Cluster, args: &[&str]) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let json = dir.path().join("results.jsonl");
    let gateways: Vec<&str> = (0..cluster.gateways.len()).map(|i| cluster.ws(i)).collect();
    let procs: Vec<String> = cluster
        .gateways
        .iter()
        .enumerate()
        .map(|(i, g)| format!("gw-{}={}", i + 1, g.process.pid()))
        .collect();
    let output = Command::new(env!("CARGO_BIN_EXE_mrc"))
        .env("MRC_NATS_URL", cluster.nats_url())
        .args(["bench", "--gateways", &gateways.join(",")])
        .args(["--procs", &procs.join(",")])
        .args(["--json", json.to_str().expect("a UTF-8 path")])
        .args(["--step-secs", "1", "--drain-secs", "5"])
        .args(["--source-ips", "0", "--max-secs", "120"])
        .args(args)
        .output()
        .expect("running mrc bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "mrc bench failed: {output:?}\n{stdout}"
    );
    std::fs::read_to_string(&json)
        .expect("the bench wrote its results")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// The `step` lines, each checked: everything sent, delivered once, reported delivered.
fn assert_every_message_arrived_once(results: &[Value], offered: &[u64], fanout: u64) {
    let steps: Vec<&Value> = results.iter().filter(|r| r["type"] == "step").collect();
    assert_eq!(steps.len(), offered.len(), "one line per step: {results:?}");
    for (step, &rate) in steps.iter().zip(offered) {
        assert_eq!(step["offered"], rate, "{step}");
        assert_eq!(step["sent"], rate, "a 1 s step sends its rate: {step}");
        assert_eq!(step["unsent"], 0, "{step}");
        assert_eq!(step["expected"], rate * fanout, "{step}");
        assert_eq!(step["delivered"], rate * fanout, "{step}");
        assert_eq!(step["lost"], 0, "{step}");
        assert_eq!(step["duplicates"], 0, "{step}");
        assert_eq!(step["not_delivered"], 0, "{step}");
        assert_eq!(step["reports"], rate, "one report per message: {step}");
        assert_eq!(step["latency"]["count"], rate * fanout, "{step}");
    }
}

#[test]
fn direct_and_group_loads_deliver_every_message_exactly_once() {
    let cluster = Cluster::start_with(
        1,
        2,
        &["--rate-per-sec", "100000", "--rate-burst", "100000"],
    );
    // With the NATS baselines, measured before and after the steps and compared with
    // their mean.
    let results = bench(
        &cluster,
        &[
            "--scenario",
            "1to1",
            "--users",
            "40",
            "--steps",
            "100,400",
            "--baseline-secs",
            "0.3",
        ],
    );
    assert_every_message_arrived_once(&results, &[100, 400], 1);
    let baselines: Vec<&Value> = results.iter().filter(|r| r["type"] == "baseline").collect();
    let when: Vec<&str> = baselines
        .iter()
        .map(|b| b["when"].as_str().unwrap())
        .collect();
    assert_eq!(when, ["before", "after"], "{results:?}");
    let request_reply: Vec<f64> = baselines
        .iter()
        .map(|b| b["request_reply_per_s"].as_f64().unwrap())
        .collect();
    assert!(request_reply.iter().all(|&rr| rr > 0.0), "{baselines:?}");
    let summary = results.iter().find(|r| r["type"] == "summary").unwrap();
    // Read back from JSON, a float may differ in its last bit (serde_json's parser).
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
    let mean = (request_reply[0] + request_reply[1]) / 2.0;
    let recorded = summary["request_reply_per_s"].as_f64().unwrap();
    assert!(close(recorded, mean), "{recorded} vs {mean}");
    let best = summary["best_delivered_per_s"].as_f64().unwrap();
    let ratio = summary["ratio_request_reply"].as_f64().unwrap();
    assert!(close(ratio, best / mean), "{ratio} vs {}", best / mean);
    let each = summary["ratio_request_reply_each"].as_array().unwrap();
    assert_eq!(each.len(), 2, "{summary}");

    let results = bench(
        &cluster,
        &[
            "--scenario",
            "multi",
            "--users",
            "40",
            "--fanout",
            "3",
            "--steps",
            "100",
            "--baseline-secs",
            "0",
        ],
    );
    assert_every_message_arrived_once(&results, &[100], 3);

    let results = bench(
        &cluster,
        &[
            "--scenario",
            "group",
            "--users",
            "30",
            "--group-size",
            "30",
            "--steps",
            "20",
            "--baseline-secs",
            "0",
        ],
    );
    assert_every_message_arrived_once(&results, &[20], 29);
}

#[test]
fn inbox_load_stores_and_drains_every_message_exactly_once() {
    let cluster = Cluster::start_with(
        1,
        2,
        &["--rate-per-sec", "100000", "--rate-burst", "100000"],
    );
    let results = bench(
        &cluster,
        &[
            "--scenario",
            "inbox",
            "--inbox-users",
            "20",
            "--inbox-per-user",
            "5",
            "--inbox-in-flight",
            "8",
            "--users",
            "20",
            "--steps",
            "100",
            "--baseline-secs",
            "0.3",
        ],
    );
    let line = |kind: &str| {
        results
            .iter()
            .find(|r| r["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} line: {results:?}"))
    };
    let store = line("inbox_store");
    for (field, want) in [("sent", 100), ("stored", 100), ("no_report", 0)] {
        assert_eq!(store[field], want, "{field}: {store}");
    }
    for field in ["inbox_full", "unavailable", "other"] {
        assert_eq!(store[field], 0, "{field}: {store}");
    }
    assert_eq!(store["lossless"], true, "{store}");
    assert!(store["stored_per_s"].as_f64().unwrap() > 0.0, "{store}");

    // Every stored message arrived once, in order, and was acknowledged (removed).
    let drain = line("inbox_drain");
    for (field, want) in [
        ("complete", 20),
        ("expected", 100),
        ("received", 100),
        ("removed", 100),
    ] {
        assert_eq!(drain[field], want, "{field}: {drain}");
    }
    for field in [
        "missing",
        "duplicates",
        "out_of_order",
        "unexpected",
        "logins_failed",
        "left_in_inboxes",
    ] {
        assert_eq!(drain[field], 0, "{field}: {drain}");
    }
    assert_eq!(drain["exact"], true, "{drain}");
    for field in ["drained_per_s", "all_logged_in_s", "last_ack_s"] {
        assert!(drain[field].as_f64().unwrap() > 0.0, "{field}: {drain}");
    }

    let raw: Vec<&Value> = results
        .iter()
        .filter(|r| r["type"] == "jetstream_baseline")
        .collect();
    let when: Vec<&str> = raw.iter().map(|b| b["when"].as_str().unwrap()).collect();
    assert_eq!(when, ["before", "after"], "{results:?}");
    assert!(raw
        .iter()
        .all(|b| b["publish_per_s"].as_f64().unwrap() > 0.0));

    // The plain and the durable step: every message delivered once; the durable ones
    // reported stored and acknowledged by their receivers.
    let steps: Vec<&Value> = results.iter().filter(|r| r["type"] == "step").collect();
    let traffic: Vec<&str> = steps
        .iter()
        .map(|s| s["traffic"].as_str().unwrap())
        .collect();
    assert_eq!(traffic, ["plain", "durable"], "{results:?}");
    for step in &steps {
        for (field, want) in [("sent", 100), ("delivered", 100), ("reports", 100)] {
            assert_eq!(step[field], want, "{field}: {step}");
        }
        for field in ["lost", "duplicates", "not_delivered", "unsent"] {
            assert_eq!(step[field], 0, "{field}: {step}");
        }
        assert_eq!(
            step["reports_delivered"], 100,
            "delivered, or stored: {step}"
        );
    }
    assert_eq!(steps[1]["inbox_removed"], 100, "{}", steps[1]);

    let summary = line("summary");
    assert_eq!(summary["scenario"], "inbox");
    for field in ["ratio_store", "ratio_drain", "jetstream_publish_per_s"] {
        assert!(summary[field].as_f64().unwrap() > 0.0, "{field}: {summary}");
    }
    let pairs = summary["durable_vs_plain"].as_array().unwrap();
    assert_eq!(pairs.len(), 1, "{summary}");
    for traffic in ["plain", "durable"] {
        let cpu = &pairs[0][traffic]["cpu_us_per_msg"];
        for label in ["gw-1", "gw-2", "bench", "cluster", "all"] {
            assert!(
                cpu[label].as_f64().is_some(),
                "{traffic} {label}: {summary}"
            );
        }
    }
}
