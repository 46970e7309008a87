use super::*;
use std::path::Path;

fn env(name: &str) -> Option<String> {
    match name {
        "ORDER_STREAM" => Some("ORDERS".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/testdata/service.toml"),
        text,
        env,
    )
}

const MINIMAL: &str = r#"
[service]
name = "svc"

[[subscribers]]
name = "orders"
component = "handler.wasm"
subject = "order.created"
stream = "ORDERS"
durable = "orders"
"#;

#[test]
fn minimal_file_gets_documented_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.service.graceful_timeout, defaults::GRACEFUL_TIMEOUT);
    assert_eq!(c.nats.servers, vec!["nats://localhost:4222"]);
    assert_eq!(c.nats.max_reconnect_attempts, Some(10_000));
    let s = &c.subscribers[0];
    assert_eq!((s.concurrency, s.batch_size), (1, 1));
    assert_eq!(s.max_deliver, Some(5));
    assert_eq!(s.ack_wait, Duration::from_secs(10));
    assert_eq!(s.memory, 64 << 20);
    let file = s.component.file().expect("a component file");
    assert!(file.is_absolute() && file.ends_with("testdata/handler.wasm"));
    assert!(s.publish.is_empty());
}

#[test]
fn full_file() {
    let text = r#"
[service]
name = "order-processor"
graceful_timeout = 60

[nats]
servers = ["nats://a:4222", "nats://b:4222"]
allow_reconnect = true
reconnect_time_wait = "500ms"
max_reconnect_attempts = -1
ping_interval = "5s"
connect_timeout = 2.5
user = "svc"
password = "${PASSWORD:-secret}"

[[streams]]
name = "${ORDER_STREAM}"
subjects = ["order.>"]

[[publishers]]
subject = "order.status"
stream = "ORDERS"
timeout = "10s"

[[publishers]]
subject = "inventory.>"

[[subscribers]]
name = "process-order"
component = "handler.wasm"
subject = "order.created"
stream = "ORDERS"
durable = "order_processor"
pull_sub = { batch_size = 3, timeout = "10s" }
consumer = { ack_wait = "2m", max_deliver = 3, backoff = ["1s", "10s"] }
concurrency = 4
dead_letter = "dlq.order"
limits = { memory = "32MiB", timeout = "5s" }
config = { region = "eu" }
"#;
    let c = parse(text).unwrap();
    assert_eq!(c.service.graceful_timeout, Duration::from_secs(60));
    assert_eq!(c.nats.max_reconnect_attempts, None);
    assert_eq!(c.nats.connect_timeout, Duration::from_millis(2500));
    assert_eq!(
        c.nats.auth,
        Auth::UserPassword("svc".into(), "secret".into())
    );
    assert_eq!(c.streams[0].name.as_str(), "ORDERS");
    let s = &c.subscribers[0];
    assert_eq!((s.concurrency, s.batch_size), (4, 3));
    assert_eq!(s.pull_timeout, Duration::from_secs(10));
    assert_eq!(s.ack_wait, Duration::from_secs(120));
    assert_eq!(
        s.backoff,
        vec![Duration::from_secs(1), Duration::from_secs(10)]
    );
    assert_eq!(s.max_deliver, Some(3));
    assert_eq!(s.memory, 32 << 20);
    assert_eq!(s.config["region"], "eu");
    let allowed: Vec<&str> = s.publish.iter().map(|p| p.as_str()).collect();
    assert_eq!(
        allowed,
        ["order.status", "inventory.>"],
        "publish defaults to the [[publishers]] subjects"
    );
}

#[test]
fn environment_overrides() {
    let env = |name: &str| match name {
        "NATS_SERVERS" => Some("nats://x:1, nats://y:2".to_string()),
        "GRACEFUL_SHUTDOWN_TIMEOUT" => Some("7".to_string()),
        "NATS_DEBUG" => Some("true".to_string()),
        _ => None,
    };
    let c = Config::parse(
        Path::new("/srv/service.toml"),
        &MINIMAL.replace(
            "handler.wasm",
            concat!(env!("CARGO_MANIFEST_DIR"), "/src/config/tests.rs"),
        ),
        env,
    );
    // The component path is checked for existence; point it at this source file.
    let c = c.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.nats.servers, vec!["nats://x:1", "nats://y:2"]);
    assert_eq!(c.service.graceful_timeout, Duration::from_secs(7));
    assert!(c.service.debug);
    assert_eq!(
        c.service.stats_interval,
        Some(defaults::DEBUG_STATS_INTERVAL)
    );
}

/// Every `testdata/invalid/NAME.toml` must fail with exactly `NAME.err`.
/// Run with `BLESS=1` to rewrite the expected files after a deliberate change.
#[test]
fn invalid_configs_print_exact_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/testdata/invalid");
    let bless = std::env::var_os("BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected the invalid-config corpus in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for case in cases {
        let text = std::fs::read_to_string(&case).unwrap();
        let shown = Path::new("invalid").join(case.file_name().unwrap());
        let err = match Config::parse(&case, &text, env) {
            Ok(_) => {
                failures.push(format!("{}: accepted, expected an error", case.display()));
                continue;
            }
            Err(e) => e
                .to_string()
                .replace(&case.display().to_string(), &shown.display().to_string())
                .replace(&dir.display().to_string(), "invalid"),
        };
        let expected_path = case.with_extension("err");
        if bless {
            std::fs::write(&expected_path, format!("{err}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected.trim_end() != err.trim_end() {
            failures.push(format!(
                "{}:\n--- expected\n{}\n--- got\n{}",
                case.display(),
                expected.trim_end(),
                err
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn tenants_from_included_files_with_their_own_paths_identity_and_grants() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("tenants/acme")).unwrap();
    std::fs::write(root.join("tenants/acme/charge.wasm"), b"").unwrap();
    std::fs::write(root.join("tenants/acme/acme.creds"), b"").unwrap();
    std::fs::write(
        root.join("service.toml"),
        r#"
[service]
name = "platform"
include = ["tenants/*.toml"]
[nats]
servers = ["nats://a:4222"]
reconnect_time_wait = "100ms"
"#,
    )
    .unwrap();
    std::fs::write(
        root.join("tenants/acme.toml"),
        r#"
[[tenants]]
name = "acme"
nats = { credentials = "acme/acme.creds" }
quotas = { concurrency = 8 }
grants = { publish = ["acme.>"] }

[[subscribers]]
name = "charge"
tenant = "acme"
component = "acme/charge.wasm"
subject = "acme.charge"
stream = "ACME"
durable = "charge"
publish = ["acme.payments.>"]
"#,
    )
    .unwrap();
    let c = Config::load_with_env(root.join("service.toml"), |_| None).unwrap();
    let t = c.tenant("acme").unwrap();
    assert_eq!(
        t.nats.servers,
        ["nats://a:4222"],
        "servers default to [nats]"
    );
    assert_eq!(t.nats.reconnect_time_wait, Duration::from_millis(100));
    assert!(matches!(&t.nats.auth, Auth::Credentials(p) if p.ends_with("tenants/acme/acme.creds")));
    assert_eq!(
        t.quotas,
        Quotas {
            concurrency: Some(8),
            publishes_per_message: defaults::PUBLISHES_PER_MESSAGE,
            cpu: Some(defaults::TENANT_CPU),
            memory: Some(defaults::TENANT_MEMORY),
            publish_rate: Some(defaults::TENANT_PUBLISH_RATE),
            publish_bytes: Some(defaults::TENANT_PUBLISH_BYTES),
            http_rate: Some(defaults::TENANT_HTTP_RATE),
            http_concurrency: Some(defaults::TENANT_HTTP_CONCURRENCY),
            component_size: Some(defaults::TENANT_COMPONENT_SIZE),
            handlers: Some(defaults::TENANT_HANDLERS),
            compile_time: Some(defaults::TENANT_COMPILE_TIME),
        }
    );
    let s = c.subscriber("charge").unwrap();
    assert_eq!(s.tenant.as_deref(), Some("acme"));
    assert!(s
        .component
        .file()
        .is_some_and(|f| f.ends_with("tenants/acme/charge.wasm")));
}

#[test]
fn a_subscriber_outside_its_tenants_grants_or_naming_no_tenant_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("h.wasm"), b"").unwrap();
    let text = r#"
[service]
name = "platform"

[[tenants]]
name = "acme"
grants = { publish = ["acme.>"] }

[[subscribers]]
name = "charge"
tenant = "acme"
component = "h.wasm"
subject = "acme.charge"
stream = "ACME"
durable = "charge"
publish = ["acme.payments.>", "beta.>", ">"]

[[subscribers]]
name = "lost"
tenant = "acne"
component = "h.wasm"
subject = "x.y"
stream = "X"
durable = "lost"
"#;
    let path = dir.path().join("service.toml");
    let e = Config::parse(&path, text, |_| None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "{}: 3 problems:\n  subscribers[0] (\"charge\").publish: \"beta.>\" is outside tenant \"acme\"'s grants.publish (acme.>)\n  subscribers[0] (\"charge\").publish: \">\" is outside tenant \"acme\"'s grants.publish (acme.>)\n  subscribers[1] (\"lost\").tenant: no tenant \"acne\" (tenants: acme)",
            path.display()
        )
    );
}

#[test]
fn an_included_file_with_a_mistake_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tenants")).unwrap();
    std::fs::write(
        dir.path().join("tenants/beta.toml"),
        "[[tenants]]\nname = \"beta\"\nquotas = { cpus = 2 }\n",
    )
    .unwrap();
    let path = dir.path().join("service.toml");
    let e = Config::parse(
        &path,
        "[service]\nname = \"p\"\ninclude = [\"tenants/*.toml\", \"missing.toml\"]\n",
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with(&format!(
            "{}:3:12: tenants[0].quotas.cpus: unknown field `cpus`",
            dir.path().join("tenants/beta.toml").display()
        )),
        "{e}"
    );
    let e = Config::parse(
        &path,
        "[service]\nname = \"p\"\ninclude = [\"missing.toml\"]\n",
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        format!(
            "{}: service.include[0]: {} does not exist",
            path.display(),
            dir.path().join("missing.toml").display()
        )
    );
}

#[test]
fn a_pinned_component_must_have_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("h.wasm"), b"component bytes").unwrap();
    let other = "e51a41f0ff3a5937d3bd1e2a6c91a53d64ef5c88e9bb4c2457bb1b0e14f55ad9";
    let text = |sha: &str| {
        format!(
            "[service]\nname = \"p\"\n[[subscribers]]\nname = \"s\"\ncomponent = {{ path = \"h.wasm\", sha256 = \"{sha}\" }}\nsubject = \"a.b\"\nstream = \"S\"\ndurable = \"d\"\n"
        )
    };
    let path = dir.path().join("service.toml");
    let digest: String = {
        use sha2::{Digest, Sha256};
        Sha256::digest(b"component bytes")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    Config::parse(&path, &text(&digest), |_| None).unwrap();
    let e = Config::parse(&path, &text(other), |_| None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "{}: subscribers[0] (\"s\").component.sha256: {} has SHA-256 {digest}, the file pins {other}: refusing a component that is not the one pinned",
            path.display(),
            dir.path().join("h.wasm").display()
        )
    );
    let e = Config::parse(&path, &text("abc"), |_| None)
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("\"abc\" is not a SHA-256 (64 hexadecimal digits)"),
        "{e}"
    );
}

const DEPLOYED: &str = r#"
[service]
name = "platform"
include = [{ kv = "DEPLOY", keys = "platform.>" }]

[nats]
servers = ["nats://a:4222"]

[[tenants]]
name = "acme"
nats = { user = "acme", password = "acme" }
deploy = { kv = "ACME_DEPLOY", keys = ">" }
"#;

fn fragment(tenant: Option<&str>, bucket: &str, key: &str, text: &str) -> Fragment {
    Fragment {
        key: FragmentKey {
            tenant: tenant.map(str::to_string),
            bucket: bucket.into(),
            key: key.into(),
        },
        revision: 3,
        text: text.into(),
    }
}

const KIT: &str = r#"
[[subscribers]]
name = "kit"
component = { object = "ACME_COMPONENTS/kit" }
subject = "acme.in"
stream = "ACME_IN"
durable = "kit"
"#;

#[test]
fn a_file_of_key_value_includes_alone_is_valid_and_fragments_join_it() {
    let path = Path::new("/srv/service.toml");
    let c = Config::parse(path, DEPLOYED, |_| None).unwrap();
    assert!(c.subscribers.is_empty(), "nothing deployed yet is valid");
    assert_eq!(
        c.service.include_kv,
        [KvKeys {
            bucket: "DEPLOY".into(),
            keys: "platform.>".into()
        }]
    );
    assert_eq!(c.fragment_sources().len(), 2);

    let acme = fragment(Some("acme"), "ACME_DEPLOY", "kit", KIT);
    let c = Config::parse_with(path, DEPLOYED, |_| None, std::slice::from_ref(&acme)).unwrap();
    let s = c.subscriber("kit").unwrap();
    assert_eq!(s.tenant.as_deref(), Some("acme"), "its tenant is implied");
    assert_eq!(s.fragment.as_ref(), Some(&acme.key));
}

#[test]
fn a_tenants_fragment_declares_only_its_own_subscribers_with_objects() {
    let path = Path::new("/srv/service.toml");
    let refused = |text: &str| {
        let f = fragment(Some("acme"), "ACME_DEPLOY", "kit", text);
        Config::parse_with(path, DEPLOYED, |_| None, &[f])
            .unwrap_err()
            .to_string()
    };
    let e = refused(&KIT.replace("{ object = \"ACME_COMPONENTS/kit\" }", "\"kit.wasm\""));
    assert!(
        e.contains("tenant \"acme\"'s ACME_DEPLOY/kit (revision 3)"),
        "{e}"
    );
    assert!(e.contains("must be an object in its own account"), "{e}");
    let e = refused(&format!("{KIT}tenant = \"beta\"\n"));
    assert!(e.contains("not tenant \"beta\"'s"), "{e}");
    let e = refused("[[tenants]]\nname = \"evil\"\n");
    assert!(e.contains("may not declare tenants"), "{e}");
    let e = refused(&KIT.replace("durable = \"kit\"", "durable = \"${HOME}\""));
    assert!(e.contains("may not read the platform's environment"), "{e}");
}

#[test]
fn fragments_declare_streams_buckets_and_a_tenants_are_its_own() {
    let path = Path::new("/srv/service.toml");
    let platform = fragment(
        None,
        "DEPLOY",
        "platform.routes",
        r#"
[[streams]]
name = "AUDIT"
subjects = ["audit.>"]

[[buckets]]
name = "STATE"

[[publishers]]
subject = "audit.>"
stream = "AUDIT"
"#,
    );
    let acme = fragment(
        Some("acme"),
        "ACME_DEPLOY",
        "kit",
        &format!(
            "{KIT}kv = {{ CART = \"rw\" }}\n[[streams]]\nname = \"ACME_IN\"\nsubjects = [\"acme.in\"]\n\n[[streams]]\nname = \"AUDIT\"\nsubjects = [\"acme.audit.>\"]\n\n[[buckets]]\nname = \"CART\"\nhistory = 5\n"
        ),
    );
    let c =
        Config::parse_with(path, DEPLOYED, |_| None, &[platform.clone(), acme.clone()]).unwrap();
    let owners: Vec<(&str, Option<&str>)> = c
        .streams
        .iter()
        .map(|s| (s.name.as_str(), s.tenant.as_deref()))
        .collect();
    assert_eq!(
        owners,
        [
            ("AUDIT", None),
            ("ACME_IN", Some("acme")),
            ("AUDIT", Some("acme"))
        ],
        "a tenant may name a stream as the platform does: it lives in its account"
    );
    let acme_tenant = Some("acme".to_string());
    assert_eq!(
        c.stream_for("AUDIT", &acme_tenant).unwrap().subjects[0].as_str(),
        "acme.audit.>"
    );
    assert_eq!(
        c.stream_for("AUDIT", &None).unwrap().subjects[0].as_str(),
        "audit.>"
    );
    assert_eq!(c.bucket_for("CART", &acme_tenant).unwrap().history, 5);
    assert!(
        c.bucket_for("CART", &None).is_none(),
        "acme's bucket is its own"
    );
    assert_eq!(c.publishers.len(), 1);

    assert!(c.streams[2].seen_by(&acme_tenant) && !c.streams[2].seen_by(&None));

    let refused = |text: &str| {
        let f = fragment(Some("acme"), "ACME_DEPLOY", "kit", text);
        Config::parse_with(path, DEPLOYED, |_| None, &[f])
            .unwrap_err()
            .to_string()
    };
    let e = refused(&format!("{KIT}[[publishers]]\nsubject = \"acme.>\"\n"));
    assert!(
        e.contains("tenant \"acme\"'s fragment may not declare publishers"),
        "{e}"
    );
    let e = refused(&format!("{KIT}{SCHEDULE}tenant = \"beta\"\n"));
    assert!(
        e.contains(
            "tenant \"acme\"'s fragment may declare only its own schedules, not tenant \"beta\"'s"
        ),
        "{e}"
    );
    // A tenant's schedules are its own: put with its identity.
    let f = fragment(
        Some("acme"),
        "ACME_DEPLOY",
        "kit",
        &format!("{KIT}{SCHEDULE}"),
    );
    let c = Config::parse_with(path, DEPLOYED, |_| None, &[f]).unwrap();
    assert_eq!(c.schedules[0].tenant.as_deref(), Some("acme"));
}

const SCHEDULE: &str = r#"
[[schedules]]
name = "tick"
subject = "jobs.tick"
every = "1m"
stream = "JOBS"
"#;

#[test]
fn a_service_fragment_declares_schedules_and_its_problems_name_it() {
    let path = Path::new("/srv/service.toml");
    let jobs = "[[streams]]\nname = \"JOBS\"\nsubjects = [\"jobs.>\", \"natsapp.schedules.>\"]\nallow_schedules = true\n";
    let f = fragment(
        None,
        "DEPLOY",
        "platform.jobs",
        &format!("{jobs}{SCHEDULE}"),
    );
    let c = Config::parse_with(path, DEPLOYED, |_| None, &[f]).unwrap();
    assert_eq!(c.schedules.len(), 1);
    assert_eq!(c.schedules[0].held_on, "natsapp.schedules.platform.tick");

    let f = fragment(
        None,
        "DEPLOY",
        "platform.jobs",
        &format!(
            "{jobs}{}",
            SCHEDULE.replace("every = \"1m\"", "every = \"10ms\"")
        ),
    );
    let e = Config::parse_with(path, DEPLOYED, |_| None, &[f])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("schedules[0] (\"tick\") in DEPLOY/platform.jobs (revision 3).every: must be 1s or more"),
        "{e}"
    );
}

#[test]
fn a_tenants_bucket_must_lie_within_its_grants() {
    let path = Path::new("/srv/service.toml");
    let granted = DEPLOYED.replace(
        "deploy = { kv = \"ACME_DEPLOY\", keys = \">\" }",
        "deploy = { kv = \"ACME_DEPLOY\", keys = \">\" }\ngrants = { kv = { CART = \"rw\" } }",
    );
    let f = fragment(
        Some("acme"),
        "ACME_DEPLOY",
        "kit",
        &format!("{KIT}[[buckets]]\nname = \"PAYMENTS\"\n"),
    );
    let e = Config::parse_with(path, &granted, |_| None, &[f])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("buckets[0] (\"PAYMENTS\") in tenant \"acme\"'s ACME_DEPLOY/kit (revision 3)")
            && e.contains("bucket \"PAYMENTS\" is outside tenant \"acme\"'s grants.kv"),
        "{e}"
    );
}
