//! OpenTelemetry traces, exported to a real OTLP/HTTP receiver on loopback:
//! a `process` span per message under the input's `traceparent`, a `send`
//! span per guest publish, `traceparent` on the outputs, and the trace id
//! in JSON logs.

use natsapp_wasm_tests::otlp::{OtlpReceiver, ReceivedSpan};
use natsapp_wasm_tests::{
    drained, eventually, js_publish, js_publish_with_headers, sigterm, spawn_run, stored,
    wait_exit, NatsServer, Running, ServiceFile,
};
use std::time::Duration;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-01")
}

/// The one span named `name` in `spans`.
fn one<'a>(spans: &'a [ReceivedSpan], name: &str, trace: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.span.name == name && s.trace_id() == trace)
        .collect();
    assert_eq!(found.len(), 1, "one {name:?} in trace {trace}: {spans:#?}");
    found[0]
}

/// OTLP's span kinds.
const CONSUMER: i32 = 5;
const PRODUCER: i32 = 4;
/// OTLP's error status code.
const STATUS_ERROR: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_and_its_outputs_form_one_trace() {
    let receiver = OtlpReceiver::start().await;
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &crate::kit_service("").replacen(
            "[service]\n",
            &format!("[service]\ntraces = \"{}\"\n", receiver.url()),
            1,
        ),
    );
    let running = Running::start(&file).await;
    let js = server.jetstream().await;
    // A service the handler asks; it answers with the traceparent it got.
    let client = server.client().await;
    let mut questions = client.subscribe("svc.price").await.unwrap();
    let answering = client.clone();
    let responder = tokio::spawn(async move {
        use futures::StreamExt;
        let question = questions.next().await.unwrap();
        let got = question
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        answering
            .publish(question.reply.unwrap(), got.clone().into())
            .await
            .unwrap();
        got
    });
    js_publish_with_headers(
        &js,
        "in.kit",
        &[("traceparent", &traceparent()), ("Nats-Msg-Id", "order-1")],
        r#"{"op":"publish","subject":"out.traced","data":"x"}"#,
    )
    .await;
    js_publish_with_headers(
        &js,
        "in.kit",
        &[("traceparent", &traceparent())],
        r#"{"op":"request","subject":"svc.price","data":"?","timeout_ms":5000}"#,
    )
    .await;
    let asked_with = responder.await.unwrap();
    js_publish(&js, "in.kit", r#"{"op":"reject","reason":"not today"}"#).await;
    let output = stored(&js, "OUT", 1).await;
    drained(&js, "IN", "kit").await;
    let carried = output
        .headers
        .get("traceparent")
        .expect("the output carries traceparent")
        .as_str()
        .to_string();
    running.stop().await;

    let spans = receiver.spans();
    let request = one(&spans, "send svc.price", TRACE_ID);
    assert_eq!(
        request.attribute("messaging.operation.name").as_deref(),
        Some("request")
    );
    assert_eq!(
        asked_with,
        format!("00-{TRACE_ID}-{}-01", request.span_id()),
        "the request carries its send span's context"
    );
    let processes: Vec<_> = spans
        .iter()
        .filter(|s| s.span.name == "process in.kit" && s.trace_id() == TRACE_ID)
        .collect();
    assert_eq!(
        processes.len(),
        2,
        "the publishing and the requesting message"
    );
    assert!(
        processes.iter().any(|p| p.span_id() == request.parent_id()),
        "the request is a child of its message's span"
    );
    let process = *processes
        .iter()
        .find(|p| p.attribute("natsapp.stream.sequence").as_deref() == Some("1"))
        .unwrap();
    assert_eq!(process.service, "kit-service");
    assert_eq!(process.span.kind, CONSUMER);
    assert_eq!(
        process.parent_id(),
        PARENT_ID,
        "the input's span is the parent"
    );
    for (key, value) in [
        ("messaging.system", "nats"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", "in.kit"),
        ("messaging.consumer.group.name", "kit"),
        ("messaging.message.id", "order-1"),
        ("natsapp.subscriber", "kit"),
        ("natsapp.stream", "IN"),
        ("natsapp.stream.sequence", "1"),
        ("natsapp.delivered", "1"),
        ("natsapp.outcome", "acked"),
    ] {
        assert_eq!(
            process.attribute(key).as_deref(),
            Some(value),
            "{key}: {process:#?}"
        );
    }
    assert_eq!(process.attribute("error.type"), None);

    let send = one(&spans, "send out.traced", TRACE_ID);
    assert_eq!(send.span.kind, PRODUCER);
    assert_eq!(
        send.parent_id(),
        process.span_id(),
        "the publish is the message's child"
    );
    assert_eq!(
        send.attribute("messaging.destination.name").as_deref(),
        Some("out.traced")
    );
    assert_eq!(
        carried,
        format!("00-{TRACE_ID}-{}-01", send.span_id()),
        "the output's traceparent names the send span"
    );

    let rejected: Vec<_> = spans
        .iter()
        .filter(|s| s.span.name == "process in.kit" && s.trace_id() != TRACE_ID)
        .collect();
    assert_eq!(rejected.len(), 1, "{spans:#?}");
    let rejected = rejected[0];
    assert_eq!(rejected.parent_id(), "", "no traceparent: a new trace");
    assert_eq!(
        rejected.attribute("error.type").as_deref(),
        Some("rejected")
    );
    assert_eq!(
        rejected.attribute("natsapp.outcome").as_deref(),
        Some("termed")
    );
    assert_eq!(
        rejected.span.status.as_ref().map(|s| s.code),
        Some(STATUS_ERROR)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_variables_turn_traces_on_and_json_logs_carry_the_trace_id() {
    let receiver = OtlpReceiver::start().await;
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, &crate::kit_service(""));
    let log = file.path().with_file_name("run.log");
    let mut child = spawn_run(
        &file,
        &log,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url().as_str()),
            ("OTEL_SERVICE_NAME", "orders-eu"),
            ("NATSAPP_LOG_FORMAT", "json"),
        ],
    );
    let js = server.jetstream().await;
    natsapp_wasm_tests::durable_exists(&js, "IN", "kit").await;
    js_publish_with_headers(
        &js,
        "in.kit",
        &[("traceparent", &traceparent())],
        r#"{"op":"log","stdout":"charging order 1","stderr":""}"#,
    )
    .await;
    drained(&js, "IN", "kit").await;
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 0);

    let spans = eventually(Duration::from_secs(5), "the exported span", || async {
        let spans = receiver.spans();
        spans
            .iter()
            .any(|s| s.trace_id() == TRACE_ID)
            .then_some(spans)
    })
    .await;
    assert_eq!(one(&spans, "process in.kit", TRACE_ID).service, "orders-eu");
    let log = std::fs::read_to_string(&log).unwrap();
    let guest_output: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["target"] == "guest" && e["message"] == "charging order 1")
        .collect();
    assert_eq!(guest_output.len(), 1, "{log}");
    let event = &guest_output[0];
    assert_eq!(event["trace_id"], TRACE_ID, "{event}");
    assert_eq!(event["subscriber"], "kit", "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_did_not_sample_is_followed_and_its_trace_goes_on() {
    let receiver = OtlpReceiver::start().await;
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, &crate::kit_service(""));
    let log = file.path().with_file_name("run.log");
    let mut child = spawn_run(
        &file,
        &log,
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &format!("{}/v1/traces", receiver.url()),
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=eu%2Dwest",
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let js = server.jetstream().await;
    natsapp_wasm_tests::durable_exists(&js, "IN", "kit").await;
    js_publish_with_headers(
        &js,
        "in.kit",
        &[("traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-00"))],
        r#"{"op":"publish","subject":"out.unsampled","data":"x"}"#,
    )
    .await;
    let output = stored(&js, "OUT", 1).await;
    let carried = output
        .headers
        .get("traceparent")
        .unwrap()
        .as_str()
        .to_string();
    let parts: Vec<&str> = carried.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", TRACE_ID, "00"),
        "the output continues the trace, not sampled: {carried}"
    );
    assert!(parts[2] != PARENT_ID && parts[2].len() == 16, "{carried}");
    // A message without a parent is sampled (parent-based, always on) and
    // exported within the schedule delay, before shutdown.
    js_publish(&js, "in.kit", r#"{"op":"ack"}"#).await;
    drained(&js, "IN", "kit").await;
    eventually(Duration::from_secs(5), "the new trace's span", || async {
        (!receiver.spans().is_empty()).then_some(())
    })
    .await;
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 0);
    let spans = receiver.spans();
    assert!(
        spans.iter().all(|s| s.trace_id() != TRACE_ID),
        "nothing of the unsampled trace is exported: {spans:#?}"
    );
    let root = spans
        .iter()
        .find(|s| s.span.name == "process in.kit")
        .expect("the new trace's process span");
    assert!(root.parent_id().is_empty(), "a root span: {root:#?}");
    assert_eq!(root.service, "kit-service");
    assert_eq!(
        root.resource_attribute("deployment.environment").as_deref(),
        Some("eu-west")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_is_checked_and_shown_in_the_plan() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &crate::kit_service("").replacen(
            "[service]\n",
            "[service]\ntraces = \"https://collector.example:4318\"\n",
            1,
        ),
    );
    let e = natsapp_wasm::config::Config::load_with_env(file.path(), |_| None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("service.traces")
            && e.contains("TLS is not built into the trace exporter: export over http:// to a collector beside the service"),
        "{e}"
    );
    file.write(
        &server,
        "service.toml",
        &crate::kit_service("").replacen(
            "[service]\n",
            "[service]\ntraces = \"http://127.0.0.1:4318/\"\n",
            1,
        ),
    );
    let plan = natsapp_wasm::plan::Plan::new(&file.config(), &Default::default()).to_string();
    assert!(
        plan.contains("\ntraces: OTLP/HTTP to http://127.0.0.1:4318/v1/traces\n"),
        "{plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_request_and_its_answer_form_one_trace() {
    let receiver = OtlpReceiver::start().await;
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &format!(
            "[service]\nname = \"pricing\"\ntraces = \"{}\"\n\n[nats]\nservers = [\"{{url}}\"]\n\n\
             [[endpoints]]\nname = \"quote\"\nsubject = \"pricing.quote\"\ncomponent = \"{{testkit}}\"\n",
            receiver.url()
        ),
    );
    let running = Running::start(&file).await;
    let client = server.client().await;
    let ask = |op: &'static str| {
        let client = client.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("traceparent", traceparent().as_str());
            client
                .request_with_headers("pricing.quote", headers, op.into())
                .await
                .ok()
        }
    };
    eventually(Duration::from_secs(30), "the endpoint to answer", || {
        ask(r#"{"op":"respond","data":"42"}"#)
    })
    .await;
    let refused = ask(r#"{"op":"reject","reason":"unknown sku"}"#)
        .await
        .unwrap();
    assert!(refused.headers.is_some(), "{refused:?}");
    running.stop().await;

    let spans = receiver.spans();
    let processes: Vec<_> = spans
        .iter()
        .filter(|s| s.span.name == "process pricing.quote" && s.trace_id() == TRACE_ID)
        .collect();
    assert!(processes.len() >= 2, "{spans:#?}");
    for p in &processes {
        assert_eq!(
            p.parent_id(),
            PARENT_ID,
            "the requester's span is the parent"
        );
        assert_eq!(p.span.kind, CONSUMER);
        assert_eq!(p.attribute("natsapp.endpoint").as_deref(), Some("quote"));
        assert_eq!(
            p.attribute("messaging.consumer.group.name").as_deref(),
            Some("pricing")
        );
    }
    let answered = processes
        .iter()
        .find(|p| p.attribute("natsapp.outcome").as_deref() == Some("answered"))
        .expect("the answered request's span");
    let answer = spans
        .iter()
        .find(|s| s.parent_id() == answered.span_id() && s.span.kind == PRODUCER)
        .expect("the guest's answer is a send span under its request's");
    assert_eq!(
        answer.attribute("messaging.operation.name").as_deref(),
        Some("publish")
    );
    let rejected = processes
        .iter()
        .find(|p| p.attribute("natsapp.outcome").as_deref() == Some("error_answer"))
        .expect("the rejected request's span");
    assert_eq!(rejected.attribute("error.type").as_deref(), Some("400"));
    assert_eq!(
        rejected.span.status.as_ref().map(|s| s.code),
        Some(STATUS_ERROR)
    );
}
