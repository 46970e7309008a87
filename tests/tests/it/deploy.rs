//! The deployment files in deploy/: they parse, and they name only what
//! exists — the runtime's environment variables, the admin endpoint's port
//! and probes, the image's paths — with grace periods that cover
//! `graceful_timeout`. (No container engine runs here: the image itself is
//! not built by the tests.)

use natsapp_wasm_tests::*;
use std::collections::BTreeSet;

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> serde_json::Value {
    serde_saphyr::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} does not parse: {e}"))
}

/// deploy/service.toml, with the environment the files set.
fn deployed_config() -> natsapp_wasm::config::Config {
    let path = repo_root().join("deploy/service.toml");
    let component = repo_root().join("guests/target/wasm32-wasip2/release/order_processor.wasm");
    // The image holds the component at /opt/natsapp; here it is in guests/target.
    let text = read("deploy/service.toml").replace(
        "/opt/natsapp/order_processor.wasm",
        component.to_str().unwrap(),
    );
    natsapp_wasm::config::Config::parse(&path, &text, |name| match name {
        "GRACEFUL_SHUTDOWN_TIMEOUT" => Some("30s".into()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Every variable the files set is one natsapp-wasm reads.
fn assert_known(names: &BTreeSet<String>, file: &str) {
    let known: BTreeSet<String> = natsapp_wasm::ENVIRONMENT_VARIABLES
        .iter()
        .map(|v| v.to_string())
        .collect();
    let unknown: Vec<&String> = names.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "{file} sets variables natsapp-wasm does not read: {unknown:?}"
    );
}

#[test]
fn the_image_runs_the_deployed_file_as_a_user_of_its_own() {
    let config = deployed_config();
    let dockerfile = read("deploy/Dockerfile");
    for line in [
        "USER natsapp",
        "COPY deploy/service.toml /etc/natsapp/service.toml",
        "COPY --from=build /src/guests/target/wasm32-wasip2/release/order_processor.wasm /opt/natsapp/order_processor.wasm",
        r#"CMD ["run", "/etc/natsapp/service.toml"]"#,
        &format!("EXPOSE {}", config.service.admin.expect("an admin endpoint").port()),
    ] {
        assert!(dockerfile.lines().any(|l| l == line), "no line {line:?} in deploy/Dockerfile");
    }
}

#[test]
fn compose_names_the_runtimes_variables_and_a_long_enough_stop() {
    let config = deployed_config();
    let compose = yaml("deploy/docker-compose.yml");
    let service = &compose["services"]["order-processor"];
    let env: BTreeSet<String> = service["environment"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_known(&env, "deploy/docker-compose.yml");
    let grace = humantime::parse_duration(service["stop_grace_period"].as_str().unwrap()).unwrap();
    assert!(grace >= config.service.graceful_timeout + std::time::Duration::from_secs(5));
    let admin = config.service.admin.unwrap().port();
    assert!(service["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p.as_str() == Some(&format!("{admin}:{admin}"))));
    assert_eq!(
        service["volumes"][0].as_str(),
        Some("component-cache:/var/cache/natsapp")
    );
}

/// Checks the pod `pod` of `file` runs `config` as the image expects: its
/// file, known variables, the admin port, probes on it and a grace period
/// that covers `graceful_timeout`; the grace period, in seconds.
fn assert_pod_runs(
    pod: &serde_json::Value,
    config: &natsapp_wasm::config::Config,
    file: &str,
) -> u64 {
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace >= config.service.graceful_timeout.as_secs() + 5,
        "{file}: {grace}"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["args"],
        serde_json::json!(["run", "/etc/natsapp/service.toml"])
    );
    let env: BTreeSet<String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_known(&env, file);
    assert_eq!(container["ports"][0]["name"], "admin");
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64(),
        Some(u64::from(config.service.admin.unwrap().port()))
    );
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    grace
}

#[test]
fn kubernetes_probes_the_admin_endpoint_and_waits_out_graceful_timeout() {
    let config = deployed_config();
    let deployment = yaml("deploy/kubernetes/order-processor.yaml");
    assert_pod_runs(
        &deployment["spec"]["template"]["spec"],
        &config,
        "deploy/kubernetes/order-processor.yaml",
    );
}

/// The YAML documents of `rel`, in order.
fn yaml_documents(rel: &str) -> Vec<serde_json::Value> {
    read(rel)
        .split("\n---\n")
        .map(|doc| {
            serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{rel} does not parse: {e}"))
        })
        .collect()
}

#[test]
fn the_fleet_carries_a_small_file_and_scales_on_a_deployed_durable() {
    let dir = "deploy/kubernetes/fleet";
    let path = repo_root().join(dir).join("service.toml");
    let fleet =
        natsapp_wasm::config::Config::parse(&path, &read(&format!("{dir}/service.toml")), |name| {
            (name == "GRACEFUL_SHUTDOWN_TIMEOUT").then(|| "30s".into())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(fleet.subscribers.is_empty() && fleet.streams.is_empty());
    assert_eq!(
        fleet.service.include_kv.len(),
        1,
        "the rest comes from NATS"
    );

    // The fragment the fleet runs joins that file as every replica reads it.
    let component = repo_root().join("guests/target/wasm32-wasip2/release/order_processor.wasm");
    let orders = natsapp_wasm::config::Fragment {
        key: natsapp_wasm::config::FragmentKey {
            tenant: None,
            bucket: fleet.service.include_kv[0].bucket.clone(),
            key: "orders".into(),
        },
        revision: 1,
        text: read(&format!("{dir}/orders.toml")).replace(
            "../../../guests/target/wasm32-wasip2/release/order_processor.wasm",
            component.to_str().unwrap(),
        ),
    };
    let deployed = natsapp_wasm::config::Config::parse_with(
        &path,
        &read(&format!("{dir}/service.toml")),
        |name| (name == "GRACEFUL_SHUTDOWN_TIMEOUT").then(|| "30s".into()),
        &[orders],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sub = &deployed.subscribers[0];

    let docs = yaml_documents(&format!("{dir}/fleet.yaml"));
    let (deployment, scaled) = (&docs[0], &docs[1]);
    assert_eq!(
        (deployment["kind"].as_str(), scaled["kind"].as_str()),
        (Some("Deployment"), Some("ScaledObject"))
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let grace = assert_pod_runs(pod, &fleet, &format!("{dir}/fleet.yaml"));
    let container = &pod["containers"][0];

    // The pods mount the file from the ConfigMap kustomize makes of it,
    // and the credentials it names from a Secret.
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount = |name: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no volume mount {name}"))
    };
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    assert_eq!(
        mount("service-file")["mountPath"],
        "/etc/natsapp/service.toml"
    );
    let kustomization: serde_json::Value =
        serde_saphyr::from_str(&read(&format!("{dir}/kustomization.yaml"))).unwrap();
    let generated = &kustomization["configMapGenerator"][0];
    assert_eq!(
        volume("service-file")["configMap"]["name"],
        generated["name"]
    );
    assert_eq!(generated["files"], serde_json::json!(["service.toml"]));
    assert_eq!(
        kustomization["resources"],
        serde_json::json!(["fleet.yaml"])
    );
    let natsapp_wasm::config::Auth::Credentials(creds) = &fleet.nats.auth else {
        panic!("the fleet connects with a credentials file");
    };
    assert_eq!(
        mount("nats-credentials")["mountPath"]
            .as_str()
            .map(std::path::Path::new),
        creds.parent()
    );
    assert!(volume("nats-credentials")["secret"]["secretName"].is_string());

    // KEDA scales that Deployment on the deployed durable's backlog, never
    // to zero, and waits longer than a pod's grace period to scale down.
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(scaled["spec"]["minReplicaCount"].as_u64().unwrap() >= 1);
    assert!(scaled["spec"]["cooldownPeriod"].as_u64().unwrap() >= grace);
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "nats-jetstream");
    assert_eq!(
        trigger["metadata"]["stream"].as_str(),
        Some(sub.stream.as_str())
    );
    assert_eq!(
        trigger["metadata"]["consumer"].as_str(),
        Some(sub.durable.as_str())
    );
}
