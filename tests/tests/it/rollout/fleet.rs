//! A fleet of replicas on a 3-node cluster converging on what is deployed
//! through a node kill, and restarting from NATS alone.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_a_cluster_converges_through_a_node_kill_and_restarts_from_nats() {
    let mut cluster = nats_test_server::NatsCluster::start().await.unwrap();
    let js = async_nats::jetstream::new(cluster.client().await.unwrap());
    for (name, subject) in [("IN", "in.>"), ("OUT", "out.>")] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let urls = cluster.urls();
    let servers: Vec<String> = urls.split(',').map(|u| format!("\"{u}\"")).collect();
    let dir = tempfile::tempdir().unwrap();
    let service = dir.path().join("service.toml");
    // The replicas' file holds [service], [nats] and the include only.
    std::fs::write(
        &service,
        FLEET.replace("[\"{url}\"]", &format!("[{}]", servers.join(", "))),
    )
    .unwrap();
    let spawn = |i: usize| {
        let log = dir.path().join(format!("replica-{i}.log"));
        let tag = format!("r{i}");
        (Replica::run(&service, &log, &[("REPLICA", &tag)]), log)
    };
    let mut replicas = Vec::new();
    for i in 0..3 {
        let (replica, log) = spawn(i);
        logged(&log, "nothing deployed runs yet").await;
        replicas.push(replica);
    }
    let cli = |args: &[&str]| {
        Command::new(natsapp_bin())
            .args(args)
            .args(["--server", &urls])
            .output()
            .unwrap()
    };
    // Each output's subject names its version and replica, so a delivery
    // whose ack died with the node and that another replica or version
    // handles again publishes a different subject: its outputs are told
    // apart from the first by the input's sequence, not their content.
    // The fragment names the streams (made R3 above) so that the runtime
    // publishes to OUT with a PubAck, and waits 2 s for one: a PubAck lost
    // with the node killed is then asked for again within seconds, not
    // after the default 30.
    let streams = "[[streams]]\nname = \"IN\"\nsubjects = [\"in.>\"]\ndeclare = false\n\n[[streams]]\nname = \"OUT\"\nsubjects = [\"out.>\"]\ndeclare = false\n\n[[publishers]]\nsubject = \"out.>\"\nstream = \"OUT\"\ntimeout = \"2s\"\n";
    let echo = |file: &str, version: &str| {
        let path = dir.path().join(file);
        std::fs::write(
            &path,
            format!(
                "[[subscribers]]\nname = \"orders\"\ncomponent = \"{}\"\nsubject = \"in.orders\"\nstream = \"IN\"\ndurable = \"orders\"\nconcurrency = 8\npublish = [\"out.>\"]\noutputs = {{ ids = \"sequence\" }}\nconfig = {{ output = \"out.{version}.${{REPLICA:-cli}}\" }}\n\n{streams}",
                guests::ECHO
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let (v1, v2) = (echo("v1.toml", "v1"), echo("v2.toml", "v2"));
    let out = cli(&[
        "deploy",
        &v1,
        "DEPLOY/orders.echo",
        "--create",
        "--bucket-replicas",
        "3",
        "--wait",
        "--replicas",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // Orders flow while a node dies and v2 is deployed, and on after it.
    let flowing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = {
        let (js, flowing) = (js.clone(), flowing.clone());
        tokio::spawn(async move {
            // Each order is sent until stored: a node dies meanwhile. Its
            // id makes a second send of a stored order a duplicate the
            // stream drops.
            let mut sent = 0;
            while flowing.load(std::sync::atomic::Ordering::Relaxed) {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("o{sent}").as_str());
                loop {
                    let publish = js
                        .publish_with_headers(
                            "in.orders",
                            headers.clone(),
                            format!("o{sent}").into(),
                        )
                        .await;
                    let stored = match publish {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    };
                    if stored {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(2).unwrap();
    let out = cli(&[
        "deploy",
        &v2,
        "DEPLOY/orders.echo",
        "--wait",
        "--replicas",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("every replica (3) applied DEPLOY/orders.echo revision 2"),
        "{}",
        text(&out)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    flowing.store(false, std::sync::atomic::Ordering::Relaxed);
    let orders = load.await.unwrap();
    cluster.restart(2).await.unwrap();
    drained(&js, "IN", "orders").await;
    let complete = tokio::time::timeout(
        Duration::from_secs(30),
        stream_has(&js, "OUT", orders as u64),
    )
    .await;
    let outputs = stored_payloads(&js, "OUT").await;
    let inputs = stored_payloads(&js, "IN").await;
    let stored: std::collections::BTreeSet<&String> = outputs.iter().map(|(_, p)| p).collect();
    let missing: Vec<&String> = inputs
        .iter()
        .map(|(_, p)| p)
        .filter(|p| !stored.contains(p))
        .collect();
    let mut counted: std::collections::BTreeMap<&String, Vec<&String>> = Default::default();
    for (subject, payload) in &outputs {
        counted.entry(payload).or_default().push(subject);
    }
    let repeated: Vec<_> = counted.iter().filter(|(_, s)| s.len() > 1).collect();
    if complete.is_err() || !missing.is_empty() || !repeated.is_empty() || inputs.len() != orders {
        // The runtimes' logs outlive the failed test, for its diagnosis.
        let logs = dir.keep();
        panic!(
            "{orders} orders sent, {} stored in IN, {} outputs; missing: {missing:?}; stored more than once (with their subjects): {repeated:?}; logs kept in {}",
            inputs.len(),
            outputs.len(),
            logs.display()
        );
    }
    assert_eq!(outputs.len(), orders, "every order output once");
    assert!(
        outputs.iter().any(|(s, _)| s.starts_with("out.v2.")),
        "v2 handled the orders after its deploy"
    );
    // Each replica's outputs name it (out.<version>.<replica>): none of
    // its v1 outputs is stored after its first v2 output.
    let mut compared = 0;
    for r in 0..3 {
        let place = |version: &str| {
            let subject = format!("out.{version}.r{r}");
            outputs
                .iter()
                .enumerate()
                .filter(move |(_, (s, _))| *s == subject)
                .map(|(i, _)| i)
        };
        if let (Some(last_v1), Some(first_v2)) = (place("v1").max(), place("v2").min()) {
            assert!(
                last_v1 < first_v2,
                "replica r{r} stored a v1 output (#{last_v1}) after its first v2 output (#{first_v2})"
            );
            compared += 1;
        }
    }
    assert!(compared > 0, "some replica handled orders with v1 and v2");

    // A replica restarted after the deploy starts from NATS alone.
    drop(replicas.remove(0));
    let (replica, log) = spawn(3);
    logged(&log, " running ").await;
    replicas.push(replica);
    let out = cli(&["status", "DEPLOY", "--replicas", "3"]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        status
            .matches("DEPLOY/orders.echo  revision 2  orders=")
            .count(),
        3,
        "{}",
        text(&out)
    );

    // Back to v1 everywhere.
    let out = cli(&["rollback", "DEPLOY/orders.echo"]);
    assert!(out.status.success(), "{}", text(&out));
    eventually(
        Duration::from_secs(30),
        "every replica on revision 3",
        || async {
            let out = cli(&["status", "DEPLOY", "--replicas", "3"]);
            (String::from_utf8_lossy(&out.stdout)
                .matches("DEPLOY/orders.echo  revision 3  orders=")
                .count()
                == 3)
                .then_some(())
        },
    )
    .await;
    js.publish("in.orders", "after rollback".into())
        .await
        .unwrap()
        .await
        .unwrap();
    stream_has(&js, "OUT", orders as u64 + 1).await;
    let last = stored_payloads(&js, "OUT").await.pop().unwrap();
    assert!(
        last.0.starts_with("out.v1.") && last.1 == "after rollback",
        "{last:?}"
    );
}
