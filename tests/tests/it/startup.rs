//! Mistakes found at start-up, before any message is pulled: each is a
//! configuration error (exit code 2) whose text names what is wrong.

use crate::kit_service;
use async_nats::jetstream::{consumer::pull, stream};
use natsapp_wasm_tests::*;

async fn start_error(file: &ServiceFile) -> natsapp_wasm::Error {
    match natsapp_wasm::Service::start(file.config()).await {
        Ok(_) => panic!("the service started"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_neither_declared_nor_present() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &kit_service("").replace("stream = \"IN\"", "stream = \"ELSEWHERE\""),
    );
    let e = start_error(&file).await;
    assert_eq!(
        e.to_string(),
        r#"stream "ELSEWHERE" (stream of subscriber "kit") is neither declared in [[streams]] nor present on the server"#
    );
    assert_eq!(e.exit_code(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_false_requires_the_stream() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &kit_service("").replacen(
            "subjects = [\"in.>\"]",
            "subjects = [\"in.>\"]\ndeclare = false",
            1,
        ),
    );
    let e = start_error(&file).await;
    assert_eq!(
        e.to_string(),
        r#"stream "IN" ([[streams]] with declare = false) is neither declared in [[streams]] nor present on the server"#
    );
    assert_eq!(e.exit_code(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_that_differs_is_not_changed() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    js.create_stream(stream::Config {
        name: "IN".into(),
        subjects: vec!["in.kit".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let file = ServiceFile::new(&server, &kit_service(""));
    let e = start_error(&file).await;
    assert_eq!(
        e.to_string(),
        r#"stream "IN" on the server differs from [[streams]] in the file: subjects: server has {"in.kit"}, file says {"in.>"}; change the file or the stream (the runtime never changes it)"#
    );
    assert_eq!(e.exit_code(), 2);
    let mut s = js.get_stream("IN").await.unwrap();
    assert_eq!(
        s.info().await.unwrap().config.subjects,
        vec!["in.kit"],
        "the stream was changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_durable_that_differs_is_not_changed() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &kit_service(r#"consumer = { ack_wait = "30s", max_deliver = 5 }"#),
    );
    // The first start creates the streams and the durable; a second with
    // different settings must refuse.
    drop(Running::start(&file).await.stop().await);
    let changed = ServiceFile::new(
        &server,
        &kit_service(r#"consumer = { ack_wait = "45s", max_deliver = 7 }"#),
    );
    let e = start_error(&changed).await;
    assert_eq!(
        e.to_string(),
        r#"durable consumer "kit" on stream "IN" differs from subscriber "kit": ack_wait: server has 30s, file says 45s; max_deliver: server has 5, file says 7; delete the consumer or change the file (the runtime never changes it)"#
    );
    assert_eq!(e.exit_code(), 2);
    let js = server.jetstream().await;
    let c: async_nats::jetstream::consumer::Consumer<pull::Config> = js
        .get_stream("IN")
        .await
        .unwrap()
        .get_consumer("kit")
        .await
        .unwrap();
    assert_eq!(
        c.cached_info().config.max_deliver,
        5,
        "the durable was changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_round_trips_through_the_server() {
    // A durable created with backoff must verify as unchanged on the next start.
    let server = NatsServer::start();
    let text = kit_service(
        r#"consumer = { ack_wait = "20s", max_deliver = 4, backoff = ["1s", "5s", "30s"] }"#,
    );
    let file = ServiceFile::new(&server, &text);
    drop(Running::start(&file).await.stop().await);
    drop(
        Running::start(&ServiceFile::new(&server, &text))
            .await
            .stop()
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_without_the_handler_export() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &kit_service("").replace("{testkit}", "{not_a_handler}"),
    );
    let e = start_error(&file).await;
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "component {} (subscriber \"kit\"): does not export natsapp:handler/handler@0.1.0 (it exports nothing)",
            guests::NOT_A_HANDLER
        )),
        "{text}"
    );
    assert_eq!(e.exit_code(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_runtime_failure() {
    let server = NatsServer::start();
    let url = server.url().to_string();
    let file = ServiceFile::new(&server, &kit_service(""));
    drop(server);
    let e = start_error(&file).await;
    assert!(
        e.to_string()
            .starts_with(&format!("cannot connect to NATS at {url}: ")),
        "{e}"
    );
    assert_eq!(e.exit_code(), 1);
}
