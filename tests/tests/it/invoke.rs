//! `natsapp-wasm invoke` and `natsapp_wasm::testing`: a handler run on one
//! message with no server — verdicts and exit codes, publishes with their
//! PubAcks, requests answered or not, key-value, grants and config from a
//! service file, the guest's output. (The in-process NATS is the feature
//! under test here; every other test runs on a real server.)

use natsapp_wasm::testing::{LocalHandler, Message, Verdict};
use natsapp_wasm_tests::*;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

fn invoke(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(natsapp_bin())
        .arg("invoke")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn invoke_json(args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, stdout, stderr) = invoke(&all);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (code, report)
}

/// The payloads of the report's publishes to `subject`, parsed.
fn published(report: &Value, subject: &str) -> Vec<Value> {
    report["published"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["subject"] == subject)
        .map(|p| serde_json::from_str(p["payload"].as_str().unwrap()).unwrap())
        .collect()
}

#[test]
fn each_verdict_has_its_line_and_exit_code() {
    let kit = guests::TESTKIT;
    let cases: &[(&str, &[&str], i32, &str)] = &[
        (r#"{"op":"ok"}"#, &[], 0, "ack ("),
        (
            r#"{"op":"retry","delay_ms":250}"#,
            &[],
            3,
            "retry after 250ms: asked to retry (",
        ),
        (
            r#"{"op":"reject","reason":"bad order"}"#,
            &[],
            4,
            "reject: bad order (",
        ),
        (
            r#"{"op":"nak","delay_ms":100}"#,
            &[],
            3,
            "retry after 100ms: the handler nak'd it (",
        ),
        (r#"{"op":"term","reason":"mine"}"#, &[], 4, "reject: mine ("),
        (
            r#"{"op":"panic","message":"boom"}"#,
            &[],
            5,
            "failure (panic): guest panicked: boom (at ",
        ),
        (
            r#"{"op":"spin"}"#,
            &["--timeout", "300ms"],
            5,
            "failure (timeout): handler exceeded its time limit of 300ms (",
        ),
        (
            r#"{"op":"alloc","mib":60}"#,
            &[],
            5,
            "failure (memory_limit): memory limit of 67108864 bytes exceeded",
        ),
        (
            r#"{"op":"alloc","mib":60}"#,
            &["--memory", "200MiB"],
            0,
            "ack (",
        ),
        (
            r#"{"op":"alloc","mib":64}"#,
            &["--memory", "16MiB"],
            5,
            "failure (memory_limit): ",
        ),
    ];
    for (payload, flags, code, first_line) in cases {
        let mut args = vec![kit, payload];
        args.extend_from_slice(flags);
        let (exit, stdout, stderr) = invoke(&args);
        assert_eq!(exit, *code, "{payload}: {stdout}{stderr}");
        let line = stdout.lines().next().unwrap_or_default();
        assert!(
            line.starts_with(first_line),
            "{payload}: {line:?} in\n{stdout}"
        );
    }
    // How the runtime settled each: what the server would have been sent.
    let (_, stdout, _) = invoke(&[kit, r#"{"op":"retry","delay_ms":250}"#]);
    assert!(stdout.contains("  settled: naked [nak 250ms]"), "{stdout}");
    let (_, stdout, _) = invoke(&[kit, r#"{"op":"nak","delay_ms":100}"#]);
    assert!(
        stdout.contains("  settled: settled_by_guest [nak 100ms]"),
        "{stdout}"
    );
}

#[test]
fn publishes_get_pubacks_and_requests_their_canned_replies() {
    let kit = guests::TESTKIT;
    let (code, report) = invoke_json(&[kit, r#"{"op":"publish","subject":"out.a","data":"x"}"#]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["verdict"], "ack");
    assert_eq!(report["settled"], "acked");
    assert_eq!(report["acks"], json!(["ack"]));
    let first = &report["published"][0];
    assert_eq!(
        (
            &first["subject"],
            &first["payload"],
            &first["stream"],
            &first["sequence"]
        ),
        (&json!("out.a"), &json!("x"), &json!("OUTPUTS"), &json!(1))
    );
    let id = first["headers"][0].clone();
    assert_eq!(id[0], "Nats-Msg-Id");
    assert!(
        id[1].as_str().unwrap().starts_with("INPUT:invoke:1:"),
        "{id}"
    );
    // The guest saw the PubAck of its first publish.
    assert_eq!(
        published(&report, "testkit.out.publish"),
        [json!({"ack": {"stream": "OUTPUTS", "sequence": 1, "duplicate": false}})]
    );

    let (code, report) = invoke_json(&[
        kit,
        r#"{"op":"request","subject":"svc.price","data":"item-7","timeout_ms":500}"#,
        "--reply",
        "svc.*=42",
    ]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        report["requests"],
        json!([{"subject": "svc.price", "payload": "item-7", "answer": "42"}])
    );
    assert_eq!(
        published(&report, "testkit.out.request"),
        [json!({"reply": "42"})]
    );

    let (code, report) = invoke_json(&[kit, r#"{"op":"try_request","subject":"svc.none"}"#]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        report["requests"][0]["error"],
        r#"no responders on "svc.none""#
    );
    assert_eq!(
        published(&report, "testkit.out.denied"),
        [json!({"result": r#"Err("unavailable: no responders on \"svc.none\"")"#})]
    );
}

#[test]
fn a_service_file_subscriber_runs_with_its_grants_config_and_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("service.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[service]
name = "shop"

[[streams]]
name = "IN"
subjects = ["in.>"]

[[streams]]
name = "EVENTS"
subjects = ["events.>", "testkit.out.>"]

[[subscribers]]
name = "kit"
component = "{kit}"
subject = "in.kit"
stream = "IN"
durable = "kit-durable"
publish = ["testkit.out.>", "events.>"]
dead_letter = "events.dead"
config = {{ region = "eu", tier = "gold", api_key = {{ secret = "s3cr3t-k3y" }} }}

[[subscribers]]
name = "other"
component = "{kit}"
subject = "in.other"
stream = "IN"
durable = "other"
"#,
            kit = guests::TESTKIT
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();

    let (code, _, stderr) = invoke(&[file, r#"{"op":"ok"}"#]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim(),
        r#"error: the service file has several subscribers ("kit", "other"): name one"#
    );
    let (code, _, stderr) = invoke(&[file, r#"{"op":"ok"}"#, "-s", "nobody"]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim(),
        r#"error: no subscriber "nobody" in the service file (it has "kit", "other")"#
    );
    let (code, stdout, _) = invoke(&[file, r#"{"op":"ok"}"#, "-s", "kit", "--subject", "in.other"]);
    assert_eq!(code, 2);
    assert_eq!(
        stdout.trim(),
        r#"not run: subject "in.other" is not one subscriber "kit" listens on (in.kit)"#
    );

    let (code, report) = invoke_json(&[
        file,
        r#"{"op":"info"}"#,
        "-s",
        "kit",
        "-c",
        "tier=platinum",
        "-H",
        "X-Trace=abc",
        "--delivered",
        "2",
    ]);
    assert_eq!(code, 0, "{report:#}");
    let info = &published(&report, "testkit.out.info")[0];
    assert_eq!(info["subject"], "in.kit");
    assert_eq!(
        (&info["stream"], &info["consumer"]),
        (&json!("IN"), &json!("kit-durable"))
    );
    assert_eq!(info["delivered"], 2);
    assert_eq!(info["headers"], json!([["X-Trace", "abc"]]));
    let mut config: Vec<Value> = info["config"].as_array().unwrap().clone();
    config.sort_by_key(|pair| pair[0].as_str().unwrap().to_string());
    assert_eq!(
        config,
        [
            json!(["api_key", "s3cr3t-k3y"]),
            json!(["region", "eu"]),
            json!(["tier", "platinum"])
        ]
    );
    assert_eq!(report["published"][0]["stream"], "EVENTS");

    // The guest sees its secret; what the runtime shows of the guest's text does not.
    let (code, report) = invoke_json(&[
        file,
        r#"{"op":"term","reason":"declined with key s3cr3t-k3y"}"#,
        "-s",
        "kit",
    ]);
    assert_eq!(code, 4);
    assert_eq!(report["reason"], "declined with key [secret api_key]");
    assert_eq!(
        report["acks"],
        json!(["term: declined with key [secret api_key]"])
    );

    // The file's allow-list holds, with the runtime's own words.
    let (_, report) = invoke_json(&[
        file,
        r#"{"op":"try_publish","subject":"orders.x"}"#,
        "-s",
        "kit",
    ]);
    let denied = published(&report, "testkit.out.denied")[0]["result"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        denied.contains(r#"subscriber \"kit\" may not publish to \"orders.x\""#),
        "{denied}"
    );

    // A reject is dead-lettered as the runtime does it.
    let (code, report) = invoke_json(&[file, r#"{"op":"reject","reason":"bad"}"#, "-s", "kit"]);
    assert_eq!(code, 4);
    assert_eq!(report["settled"], "dead_lettered");
    assert_eq!(report["acks"], json!(["term: bad"]));
    let copy = &report["dead_letter"];
    assert_eq!(
        (&copy["subject"], &copy["stream"]),
        (&json!("events.dead"), &json!("EVENTS"))
    );
    let reason = copy["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "Natsapp-Reason")
        .unwrap();
    assert_eq!(reason[1], "bad");
}

#[test]
fn the_payload_can_come_from_standard_input() {
    let mut child = Command::new(natsapp_bin())
        .args(["invoke", guests::ECHO, "--file", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["published"][0]["payload"], "from stdin");
}

#[test]
fn the_library_keeps_buckets_across_runs_and_the_guest_output() {
    let handler = LocalHandler::component(guests::TESTKIT)
        .kv("B", "seeded", "1")
        .build()
        .unwrap();
    let kv = |calls: Value| {
        let report = handler.invoke(Message::new(
            json!({"op": "kv", "calls": calls}).to_string(),
        ));
        assert_eq!(report.verdict, Verdict::Acked, "{report}");
        let results = report
            .published
            .iter()
            .find(|p| p.subject == "testkit.out.kv")
            .unwrap()
            .json()
            .unwrap();
        (report, results)
    };
    let (report, results) = kv(json!([
        {"call": "get", "bucket": "B", "key": "seeded"},
        {"call": "create", "bucket": "B", "key": "order.7", "value": "first"},
    ]));
    assert_eq!(
        results,
        json!([{"ok": {"value": "1", "revision": 1}}, {"ok": 2}])
    );
    assert_eq!(report.kv.len(), 1);
    assert_eq!(
        (report.kv[0].op, report.kv[0].revision),
        ("create", Some(2))
    );
    // The next run sees what the first wrote: a second create loses.
    let (report, results) = kv(json!([
        {"call": "create", "bucket": "B", "key": "order.7", "value": "second"},
        {"call": "get", "bucket": "Z", "key": "k"},
    ]));
    assert_eq!(results[0], json!({"ok": null}));
    assert_eq!(
        results[1]["error"],
        r#"denied: subscriber "testkit" is not granted bucket "Z" (kv = { … } in service.toml)"#
    );
    assert_eq!(report.kv[0].revision, None);
    assert_eq!(
        handler.bucket("B"),
        [
            ("order.7".to_string(), "first".into()),
            ("seeded".to_string(), "1".into())
        ]
    );

    let report = handler.invoke(Message::new(
        r#"{"op":"log","stdout":"hello","stderr":"careful"}"#,
    ));
    assert_eq!(report.stdout(), ["hello"]);
    assert_eq!(
        report
            .log
            .iter()
            .filter(|l| l.stderr)
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>(),
        ["careful"]
    );
}

/// The wrapper's payment example, run as its service file says, against
/// the test payment service: key-value, HTTP and a secret inside `invoke`.
async fn payment_example(component: &str) {
    let api = natsapp_wasm_tests::web::WebServer::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::fs::read_to_string(repo_root().join("examples/payment/service.toml")).unwrap();
    let file = dir.path().join("service.toml");
    std::fs::write(
        &file,
        example.replace(
            "../../guests/target/wasm32-wasip2/release/payment.wasm",
            component,
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap().to_string();
    let origin = api.origin();
    let run = |payload: Value| {
        let file = file.clone();
        let origin = origin.clone();
        async move {
            let out = tokio::process::Command::new(natsapp_bin())
                .args(["invoke", &file, &payload.to_string(), "--json"])
                .env("PAYMENT_ORIGIN", &origin)
                .output()
                .await
                .unwrap();
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "{e}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            (out.status.code().unwrap(), report)
        }
    };
    let (code, report) = run(json!({"payment_id": "p1", "amount": 30.5, "currency": "EUR"})).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        published(&report, "payment.success"),
        [json!({"payment_id": "p1", "charge_id": "ch_p1", "amount": 30.5, "currency": "EUR"})]
    );
    assert_eq!(report["published"][0]["stream"], "PAYMENT_EVENTS");
    assert_eq!(report["kv"][0]["bucket"], "PAYMENTS");
    assert_eq!(api.charges().get("p1"), Some(&1));

    let (code, report) =
        run(json!({"payment_id": "big", "amount": 5000.0, "currency": "EUR"})).await;
    assert_eq!(code, 4, "{report:#}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .starts_with("payment declined (402)"),
        "{report:#}"
    );
    assert_eq!(report["dead_letter"]["subject"], "dlq.payment");

    let (code, report) =
        run(json!({"payment_id": "flaky-1", "amount": 1.0, "currency": "EUR"})).await;
    assert_eq!(code, 3, "{report:#}");
    assert_eq!(report["settled"], "naked");
}

#[tokio::test]
async fn the_payment_example_in_rust() {
    payment_example(guests::PAYMENT).await;
}

#[tokio::test]
async fn the_payment_example_in_python() {
    payment_example(guests::PY_PAYMENT).await;
}

#[test]
fn a_missing_component_is_named() {
    let (code, _, stderr) = invoke(&["/nowhere/handler.wasm", "x"]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim(),
        "error: cannot read component /nowhere/handler.wasm: No such file or directory (os error 2)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_serves_async_tests() {
    let handler = LocalHandler::component(guests::TESTKIT)
        .config("region", "eu")
        .build()
        .unwrap();
    let report = handler
        .invoke_async(Message::new(r#"{"op":"info"}"#).header("X-Trace", "t-1"))
        .await;
    assert_eq!(report.verdict, Verdict::Acked, "{report}");
    let info = report.published[0].json().unwrap();
    assert_eq!(info["headers"], json!([["X-Trace", "t-1"]]));
    assert_eq!(info["config"], json!([["region", "eu"]]));
    // Dropped here, inside the async runtime: no panic.
    drop(handler);
}

#[test]
fn a_rust_parser_falls_back_to_the_default_parser_and_says_so() {
    let handler = LocalHandler::component(guests::TESTKIT).build().unwrap();
    let parsed = |payload: &str| {
        let op = json!({"op": "parse_with", "payload": payload}).to_string();
        let report = handler.invoke(Message::new(op));
        assert_eq!(report.verdict, Verdict::Acked, "{report}");
        let parsed = report.published[0].json().unwrap();
        let stderr: Vec<String> = report
            .log
            .iter()
            .filter(|l| l.stderr)
            .map(|l| l.text.clone())
            .collect();
        (parsed, stderr)
    };
    assert_eq!(
        parsed("id=7;qty=2"),
        (json!({"custom": [["id", "7"], ["qty", "2"]]}), vec![])
    );
    assert_eq!(
        parsed(r#"{"id": 7}"#),
        (
            json!({"default": {"id": 7}}),
            vec![r#"message parser failed ("{\"id\": 7}" is not key=value); using the default parser"#.to_string()]
        )
    );
}

#[test]
fn atomic_outputs_are_reported_once_committed_and_a_failed_call_stores_none() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("service.toml");
    let text = crate::kit_service("outputs = { mode = \"atomic\" }")
        .replace("{url}", "nats://127.0.0.1:4222")
        .replace("{testkit}", guests::TESTKIT);
    std::fs::write(&file, text).unwrap();
    let handler = LocalHandler::service(&file, None).build().unwrap();
    let fanout = |extra: Value| {
        let mut op = json!({"op": "fanout", "subjects": ["out.a"], "n": 3});
        op.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Message::new(op.to_string())
    };

    let failed = handler.invoke(fanout(json!({"fail_until": 2})).delivered(1));
    assert!(matches!(failed.verdict, Verdict::Retry { .. }), "{failed}");
    assert!(failed.published.is_empty(), "{failed}");

    let report = handler.invoke(fanout(json!({"settle": "ack"})));
    assert_eq!(report.verdict, Verdict::Acked, "{report}");
    let stored: Vec<_> = report
        .published
        .iter()
        .filter(|p| p.subject == "out.a")
        .map(|p| {
            let ack = p.stored.as_ref().expect("stored in OUT");
            (ack.stream.as_str(), ack.sequence)
        })
        .collect();
    assert_eq!(stored, [("OUT", 1), ("OUT", 2), ("OUT", 3)]);
    let at = |subject: &str| report.published.iter().rposition(|p| p.subject == subject);
    assert!(
        at("testkit.out.fanout") > at("out.a"),
        "the core report goes out after the commit: {report}"
    );
    let fanout = report
        .published
        .iter()
        .find(|p| p.subject == "testkit.out.fanout");
    let said = fanout.unwrap().json().unwrap();
    assert_eq!(said["with_puback"], 0, "publish returned no PubAck: {said}");
    assert_eq!(report.acks, [natsapp_wasm::nats::ack::Ack::Ack], "{report}");
}

#[test]
fn an_endpoints_request_runs_locally_and_shows_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("service.toml");
    std::fs::write(
        &file,
        format!(
            "[service]\nname = \"pricing\"\n\n[[endpoints]]\nname = \"quote\"\nsubject = \"pricing.quote\"\ncomponent = \"{}\"\n",
            guests::TESTKIT
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (code, stdout, stderr) = invoke(&[file, r#"{"op":"respond","data":"42.5"}"#]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("  answer: 42.5\n"), "{stdout}");
    assert!(stdout.ends_with("  settled: answered\n"), "{stdout}");

    let (code, report) = invoke_json(&[file, r#"{"op":"reject","reason":"unknown sku"}"#]);
    assert_eq!(code, 4, "{report}");
    assert_eq!(report["settled"], "error_answer");
    assert_eq!(
        report["answer"]["headers"],
        json!([
            ["Nats-Service-Error", "unknown sku"],
            ["Nats-Service-Error-Code", "400"]
        ])
    );

    // Returning without an answer is a failure the requester sees as 500.
    let (code, stdout, _) = invoke(&[file, r#"{"op":"ok"}"#]);
    assert_eq!(code, 5, "{stdout}");
    assert!(
        stdout.contains("  answer: error 500 no response\n"),
        "{stdout}"
    );
    assert!(stdout.starts_with("failure (no_response): the handler returned without answering: answered 500:no response"), "{stdout}");
}
