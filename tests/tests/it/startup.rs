//! Mistakes found at start-up, before any message is pulled: each is a
//! configuration error (exit code 2) whose text names what is wrong.

use crate::kit_service;
use async_nats::jetstream::{consumer::pull, stream};
use natsapp_wasm_tests::*;
use std::time::Duration;

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
async fn an_existing_durable_is_updated_where_the_runtime_manages_it_and_refused_where_it_differs()
{
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &kit_service(r#"consumer = { ack_wait = "30s", max_deliver = 5 }"#),
    );
    drop(Running::start(&file).await.stop().await);
    let js = server.jetstream().await;
    let config = || async {
        let c: async_nats::jetstream::consumer::Consumer<pull::Config> = js
            .get_stream("IN")
            .await
            .unwrap()
            .get_consumer("kit")
            .await
            .unwrap();
        c.cached_info().config.clone()
    };
    assert_eq!(config().await.max_deliver, 6, "one more than the file's");

    // ack_wait and max_deliver are the runtime's to manage: set in place.
    let managed = ServiceFile::new(
        &server,
        &kit_service(r#"consumer = { ack_wait = "45s", max_deliver = 7 }"#),
    );
    drop(Running::start(&managed).await.stop().await);
    let c = config().await;
    assert_eq!((c.ack_wait, c.max_deliver), (Duration::from_secs(45), 8));

    // Another filter subject changes what the handler gets: refused, untouched.
    let other = ServiceFile::new(
        &server,
        &kit_service(r#"consumer = { ack_wait = "45s", max_deliver = 7 }"#)
            .replace("subject = \"in.kit\"", "subject = \"in.other\""),
    );
    let e = start_error(&other).await;
    assert_eq!(
        e.to_string(),
        r#"durable consumer "kit" on stream "IN" differs from subscriber "kit": subject: server filters ["in.kit"], file says "in.other"; delete the consumer or change the file (the runtime changes only the fields it manages)"#
    );
    assert_eq!(e.exit_code(), 2);
    assert_eq!(
        config().await.filter_subject,
        "in.kit",
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
    let text = natsapp_wasm::error::ErrorChain(&e).to_string();
    assert!(
        text.starts_with(&format!(
            "component {} (subscriber \"kit\"): does not export natsapp:handler/handler@0.1.3 (it exports nothing)",
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
    let text = natsapp_wasm::error::ErrorChain(&e).to_string();
    assert!(
        text.starts_with(&format!("cannot connect to NATS at {url}: ")),
        "{text}"
    );
    assert_eq!(e.exit_code(), 1);
}
