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

#[test]
fn kubernetes_probes_the_admin_endpoint_and_waits_out_graceful_timeout() {
    let config = deployed_config();
    let deployment = yaml("deploy/kubernetes/order-processor.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace >= config.service.graceful_timeout.as_secs() + 5,
        "{grace}"
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
    assert_known(&env, "deploy/kubernetes/order-processor.yaml");
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
}
