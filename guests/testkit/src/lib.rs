//! The test corpus's handler: each message's JSON payload says what to do,
//! so one component exercises every runtime behaviour. Results the tests
//! check are published to `testkit.out.<op>`.

use natsapp_guest::kv::Bucket;
use natsapp_guest::{export_handler, Data, Error, Handler, Message, Result};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Op {
    /// Return ok.
    Ok,
    /// Publish `data` to `subject`, report the PubAck on testkit.out.publish.
    Publish { subject: String, data: String },
    /// Publish stored after `delay_ms` and kept `ttl_ms`; report the
    /// PubAck, or the error, on testkit.out.later.
    Later { subject: String, data: String, delay_ms: Option<u64>, ttl_ms: Option<u64> },
    /// Publish, then fail with retry until delivered reaches `n`: the
    /// redelivery publishes the same output again, which must be deduplicated.
    PublishThenFail { subject: String, data: String, n: u32 },
    /// Publish `n` outputs "<i>:<delivered>" (or "<i>" when `same`: alike on
    /// every delivery) to each of `subjects`, stopping at the
    /// first error, and report on testkit.out.fanout; then settle the
    /// message itself when `settle` says ("ack", "nak", "term"), fail with
    /// retry while delivered < `fail_until`, else succeed.
    Fanout { subjects: Vec<String>, n: u32, #[serde(default)] settle: Option<String>, #[serde(default)] fail_until: u32, #[serde(default)] same: bool },
    /// Return retry with this delay.
    Retry { delay_ms: Option<u64> },
    /// Fail with retry until delivered reaches `n`, then report and succeed.
    FailUntil { n: u32 },
    /// Return reject.
    Reject { reason: String },
    /// Settle it ourselves, then return `then` (ok, or an error to prove it is ignored).
    Ack { then_fail: bool },
    Nak { delay_ms: Option<u64> },
    Term { reason: Option<String> },
    /// Settle twice: the second must be denied.
    AckTwice,
    /// Panic.
    Panic { message: String },
    /// Loop forever.
    Spin,
    /// Sleep (a host wait, not a spin), then succeed.
    Sleep { ms: u64 },
    /// Keep the CPU busy for `ms` of wall time (no host call but the
    /// clock), then report on testkit.out.busy and succeed.
    Busy { ms: u64 },
    /// Compute `n` rounds of a hash (a fixed amount of guest CPU whatever
    /// the parking), then succeed.
    Work { n: u64 },
    /// Allocate and touch this many MiB.
    Alloc { mib: usize },
    /// Send a request (with `headers`), publish the reply to testkit.out.request.
    Request { subject: String, data: String, timeout_ms: u64, #[serde(default)] headers: Vec<(String, String)> },
    /// Publish subject, headers, delivery and config to testkit.out.info.
    Info,
    /// Try publishing to `subject` and report the error on testkit.out.denied.
    TryPublish { subject: String },
    /// Try publishing `size` bytes to `subject`; report the outcome on testkit.out.denied.
    TryPublishBytes { subject: String, size: usize },
    /// Recurse `depth` frames deep (a stack overflow when deep enough).
    Recurse { depth: u64 },
    /// Publish to testkit.out.flood `n` times, stopping at the first error, and report how far it got.
    PublishFlood { n: u64 },
    /// Print `n` empty lines.
    EmptyLines { n: u64 },
    /// Create `n` host resources (clock pollables) and never drop them.
    LeakResources { n: u64 },
    /// Send `n` requests to `subject` (no responders), ignoring the errors.
    RequestLoop { subject: String, n: u64 },
    /// Try a request to `subject` and report the outcome on testkit.out.denied.
    TryRequest { subject: String },
    /// Publish with these headers; report the outcome on testkit.out.headers.
    PublishWithHeaders { subject: String, data: String, headers: Vec<(String, String)> },
    /// Write a line to stdout and one to stderr.
    Log { stdout: String, stderr: String },
    /// Parse `payload` with a parser of "key=value;…" pairs (the SDK's
    /// parse_with); report what came of it on testkit.out.parsed.
    ParseWith { payload: String },
    /// Probe the sandbox: environment, files, network; report what worked.
    Sandbox,
    /// Count messages seen by this instance (shows whether it is reused).
    Count,
    /// Answer with `respond` (WIT 0.1.2), with an `X-Answered-By` header.
    Respond { data: String },
    /// Answer on the message's reply address (its Reply-To header, or a
    /// request's reply subject) with a publish, after `after_ms`.
    Reply { data: String, #[serde(default)] after_ms: u64 },
    /// Publish `first` (subject, data pairs) on the first delivery and ask
    /// for a retry; publish `then` on the later ones and succeed.
    Outputs { first: Vec<(String, String)>, then: Vec<(String, String)> },
    /// Sleep `delay_ms`, then publish until it succeeds, at most
    /// `attempts` times; report the errors.
    PublishRetrying { subject: String, data: String, attempts: u32, delay_ms: u64 },
    /// Run key-value calls in order; report each result on testkit.out.kv.
    Kv { calls: Vec<KvCall> },
    /// Write `n` values of `size` bytes under `fill.<i>`, stopping at the
    /// first error; report how many were stored and the error.
    KvFill { bucket: String, n: u64, size: usize },
    /// Send an HTTP request, following up to `follow` redirects (each a
    /// new request); report status and body, or the error, on testkit.out.http.
    Http { method: String, url: String, body: Option<String>, timeout_ms: Option<u64>, follow: Option<u32> },
    /// Send `n` GET requests to `url`; report how many got a response and the first error.
    HttpFlood { url: String, n: u32 },
    /// Record `key` with create-if-absent; only the winner publishes `data`
    /// to `subject`. Report who won on testkit.out.idempotent.
    Idempotent { bucket: String, key: String, subject: String, data: String },
}

/// One key-value call of `Op::Kv`.
#[derive(Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
enum KvCall {
    Get { bucket: String, key: String },
    Put { bucket: String, key: String, value: String },
    Create { bucket: String, key: String, value: String },
    Update { bucket: String, key: String, value: String, revision: u64 },
    Delete { bucket: String, key: String },
}

impl KvCall {
    /// The call's result as JSON: `{"ok": …}` or `{"error": "…"}`.
    fn run(self) -> serde_json::Value {
        let result = match self {
            KvCall::Get { bucket, key } => Bucket::new(bucket).get(&key).map(|e| {
                e.map(|e| json!({"value": String::from_utf8_lossy(&e.value), "revision": e.revision}))
                    .unwrap_or(serde_json::Value::Null)
            }),
            KvCall::Put { bucket, key, value } => Bucket::new(bucket).put(&key, value).map(|r| json!(r)),
            KvCall::Create { bucket, key, value } => Bucket::new(bucket).create(&key, value).map(|r| json!(r)),
            KvCall::Update { bucket, key, value, revision } => {
                Bucket::new(bucket).update(&key, value, revision).map(|r| json!(r))
            }
            KvCall::Delete { bucket, key } => Bucket::new(bucket).delete(&key).map(|()| json!(null)),
        };
        match result {
            Ok(v) => json!({"ok": v}),
            Err(e) => json!({"error": e.to_string()}),
        }
    }
}

struct TestKit;

/// Messages this instance has handled with `count`.
static SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn report(op: &str, value: serde_json::Value) -> Result {
    natsapp_guest::publish_json(&format!("testkit.out.{op}"), &value)?;
    Ok(())
}

impl Handler for TestKit {
    fn handle(data: Data, msg: &Message) -> Result {
        if let Some(key) = msg.kv_key() {
            // A watched bucket's change: reported, then its value run as an op.
            let operation = msg.kv_operation().map(|o| o.as_str());
            report("kvchange", json!({"key": key, "operation": operation, "revision": msg.kv_revision()}))?;
            if data.bytes().is_empty() {
                return Ok(());
            }
        }
        match data.json::<Op>()? {
            Op::Ok => Ok(()),
            Op::Publish { subject, data } => {
                let ack = natsapp_guest::publish(&subject, data)?;
                let ack = ack.map(|a| json!({"stream": a.stream, "sequence": a.sequence, "duplicate": a.duplicate}));
                report("publish", json!({"ack": ack}))
            }
            Op::Later { subject, data, delay_ms, ttl_ms } => {
                let later = natsapp_guest::Later {
                    delay: delay_ms.map(Duration::from_millis),
                    ttl: ttl_ms.map(Duration::from_millis),
                };
                match natsapp_guest::publish_later(&subject, data, &[], later) {
                    Ok(ack) => report("later", json!({"stream": ack.map(|a| a.stream)})),
                    Err(e) => report("later", json!({"error": e.to_string()})),
                }
            }
            Op::PublishThenFail { subject, data, n } => {
                let ack = natsapp_guest::publish(&subject, data)?.ok_or_else(|| Error::reject("no PubAck"))?;
                let delivered = msg.delivery().delivered;
                report("publish", json!({"sequence": ack.sequence, "duplicate": ack.duplicate, "delivered": delivered}))?;
                if delivered < n {
                    return Err(Error::retry("failing after publishing"));
                }
                Ok(())
            }
            Op::Fanout { subjects, n, settle, fail_until, same } => {
                let delivered = msg.delivery().delivered;
                let (mut published, mut with_puback, mut error) = (0u32, 0u32, None);
                let outputs = subjects.iter().flat_map(|s| (0..n).map(move |i| (s, i)));
                for (subject, i) in outputs {
                    let payload = if same { i.to_string() } else { format!("{i}:{delivered}") };
                    match natsapp_guest::publish(subject, payload) {
                        Ok(ack) => {
                            published += 1;
                            with_puback += u32::from(ack.is_some());
                        }
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                report("fanout", json!({"published": published, "with_puback": with_puback, "error": error, "delivered": delivered}))?;
                match settle.as_deref() {
                    Some("ack") => msg.ack()?,
                    Some("nak") => msg.nak(None)?,
                    Some("term") => msg.term(Some("terminated after publishing"))?,
                    _ => {}
                }
                if delivered < fail_until {
                    return Err(Error::retry("failing after publishing"));
                }
                Ok(())
            }
            Op::Retry { delay_ms } => Err(match delay_ms {
                Some(ms) => Error::retry_after(Duration::from_millis(ms), "asked to retry"),
                None => Error::retry("asked to retry"),
            }),
            Op::FailUntil { n } => {
                let delivered = msg.delivery().delivered;
                if delivered < n {
                    return Err(Error::retry(format!("delivery {delivered} of {n}")));
                }
                report("fail_until", json!({"delivered": delivered}))
            }
            Op::Reject { reason } => Err(Error::reject(reason)),
            Op::Ack { then_fail } => {
                msg.ack()?;
                if then_fail {
                    return Err(Error::retry("failing after my own ack"));
                }
                Ok(())
            }
            Op::Nak { delay_ms } => {
                msg.nak(delay_ms.map(Duration::from_millis))?;
                Ok(())
            }
            Op::Term { reason } => {
                msg.term(reason.as_deref())?;
                Ok(())
            }
            Op::AckTwice => {
                msg.ack()?;
                let second = msg.ack().map_err(|e| e.to_string());
                report("ack_twice", json!({"second": format!("{second:?}")}))
            }
            Op::Panic { message } => panic!("{message}"),
            Op::Spin => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            Op::Busy { ms } => {
                let until = std::time::Instant::now() + Duration::from_millis(ms);
                let mut x: u64 = 0;
                while std::time::Instant::now() < until {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                report("busy", json!({"busy_ms": ms, "seq": msg.delivery().stream_sequence}))
            }
            Op::Work { n } => {
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
                for _ in 0..n {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x = std::hint::black_box(x ^ (x << 17));
                }
                Ok(())
            }
            Op::Sleep { ms } => {
                std::thread::sleep(Duration::from_millis(ms));
                report("sleep", json!({"slept_ms": ms, "seq": msg.delivery().stream_sequence}))
            }
            Op::Alloc { mib } => {
                let mut v: Vec<u8> = Vec::new();
                for _ in 0..mib {
                    let mut chunk = vec![0u8; 1 << 20];
                    chunk[0] = 1;
                    v.extend_from_slice(&chunk);
                }
                report("alloc", json!({"allocated_mib": v.len() >> 20}))
            }
            Op::Request { subject, data, timeout_ms, headers } => {
                let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                let reply = natsapp_guest::request_with_headers(&subject, data, &headers, Duration::from_millis(timeout_ms))?;
                report("request", json!({"reply": String::from_utf8_lossy(&reply.data)}))
            }
            Op::Info => {
                let d = msg.delivery();
                report(
                    "info",
                    json!({
                        "subject": msg.subject(),
                        "reply": msg.reply(),
                        "headers": msg.headers(),
                        "stream": d.stream, "consumer": d.consumer,
                        "stream_sequence": d.stream_sequence, "delivered": d.delivered,
                        "published_unix_ns": d.published_unix_ns,
                        "config": natsapp_guest::config::all(),
                    }),
                )
            }
            Op::Kv { calls } => {
                let results: Vec<serde_json::Value> = calls.into_iter().map(KvCall::run).collect();
                report("kv", json!(results))
            }
            Op::KvFill { bucket, n, size } => {
                let bucket = Bucket::new(bucket);
                let value = vec![b'v'; size];
                let mut stored = 0;
                let mut error = None;
                for i in 0..n {
                    match bucket.put(&format!("fill.{i}"), &value) {
                        Ok(_) => stored += 1,
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                report("kv_fill", json!({"stored": stored, "error": error}))
            }
            Op::Http { method, url, body, timeout_ms, follow } => {
                let mut url = url;
                let mut redirects = follow.unwrap_or(0);
                let result = loop {
                    let mut req = natsapp_guest::http::Request::new(&method, &url);
                    if let Some(b) = &body {
                        req = req.body(b.clone());
                    }
                    if let Some(ms) = timeout_ms {
                        req = req.timeout(Duration::from_millis(ms));
                    }
                    match req.send() {
                        Ok(r) if (300..400).contains(&r.status) && redirects > 0 => {
                            redirects -= 1;
                            url = r.header("location").unwrap_or_default().to_string();
                        }
                        other => break other,
                    }
                };
                match result {
                    Ok(r) => report("http", json!({"status": r.status, "body": r.text(), "echo": r.header("x-echo")})),
                    Err(e) => report("http", json!({"error": e.to_string(), "kind": format!("{e:?}").split('(').next().unwrap_or("").to_string()})),
                }
            }
            Op::HttpFlood { url, n } => {
                let mut answered = 0;
                let mut first_error = None;
                for _ in 0..n {
                    match natsapp_guest::http::get(&url) {
                        Ok(_) => answered += 1,
                        Err(e) => {
                            first_error.get_or_insert(e.to_string());
                        }
                    }
                }
                report("http_flood", json!({"answered": answered, "error": first_error}))
            }
            Op::Idempotent { bucket, key, subject, data } => {
                let won = Bucket::new(bucket).create(&key, "handled")?.is_some();
                if won {
                    natsapp_guest::publish(&subject, data)?;
                }
                report("idempotent", json!({"key": key, "won": won}))
            }
            Op::TryPublish { subject } => {
                let result = natsapp_guest::publish(&subject, "x").map(|_| ()).map_err(|e| e.to_string());
                report("denied", json!({"result": format!("{result:?}")}))
            }
            Op::TryPublishBytes { subject, size } => {
                let result = natsapp_guest::publish(&subject, vec![b'x'; size]).map(|_| ()).map_err(|e| e.to_string());
                report("denied", json!({"result": format!("{result:?}")}))
            }
            Op::Recurse { depth } => {
                fn down(n: u64) -> u64 {
                    if n == 0 {
                        0
                    } else {
                        std::hint::black_box(down(n - 1)) + 1
                    }
                }
                report("recurse", json!({"depth": down(depth)}))
            }
            Op::PublishFlood { n } => {
                let mut published = 0u64;
                let mut error = None;
                for i in 0..n {
                    match natsapp_guest::publish("testkit.out.flood", i.to_string()) {
                        Ok(_) => published += 1,
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                // The report itself is a publish: over the quota it is refused too.
                let _ = report("flood_result", json!({"published": published, "error": error}));
                Ok(())
            }
            Op::EmptyLines { n } => {
                for _ in 0..n {
                    println!();
                }
                Ok(())
            }
            Op::LeakResources { n } => {
                for _ in 0..n {
                    std::mem::forget(wasi::clocks::monotonic_clock::subscribe_duration(1_000_000_000));
                }
                report("leaked", json!({"resources": n}))
            }
            Op::RequestLoop { subject, n } => {
                for _ in 0..n {
                    let _ = natsapp_guest::request(&subject, "x", Duration::from_millis(100));
                }
                Ok(())
            }
            Op::TryRequest { subject } => {
                let result = natsapp_guest::request(&subject, "x", Duration::from_millis(500))
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                report("denied", json!({"result": format!("{result:?}")}))
            }
            Op::PublishWithHeaders { subject, data, headers } => {
                let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                let result = natsapp_guest::publish_with_headers(&subject, data, &headers)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                report("headers", json!({"result": format!("{result:?}")}))
            }
            Op::ParseWith { payload } => {
                let pairs = |bytes: &[u8]| -> std::result::Result<Vec<(String, String)>, String> {
                    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
                    text.split(';')
                        .map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or(format!("{p:?} is not key=value")))
                        .collect()
                };
                let parsed = match Data::from(payload.into_bytes()).parse_with(pairs) {
                    natsapp_guest::Parsed::Custom(pairs) => json!({"custom": pairs}),
                    natsapp_guest::Parsed::Default(natsapp_guest::Payload::Json(v)) => json!({"default": v}),
                    natsapp_guest::Parsed::Default(other) => json!({"default": format!("{other:?}")}),
                };
                report("parsed", parsed)
            }
            Op::Log { stdout, stderr } => {
                println!("{stdout}");
                eprintln!("{stderr}");
                Ok(())
            }
            Op::Sandbox => report(
                "sandbox",
                json!({
                    "env_vars": std::env::vars().count(),
                    "args": std::env::args().count(),
                    "read_root": std::fs::read_dir("/").map(|_| ()).map_err(|e| e.to_string()).is_ok(),
                    "read_etc_passwd": std::fs::read("/etc/passwd").is_ok(),
                    "write_tmp": std::fs::write("/tmp/natsapp-escape", b"x").is_ok(),
                    "tcp_connect": std::net::TcpStream::connect("127.0.0.1:4222").is_ok(),
                    "resolve_dns": std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 80)).is_ok(),
                }),
            ),
            Op::Count => {
                let n = SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                report("count", json!({"seen": n}))
            }
            Op::Outputs { first, then } => {
                let delivered = msg.delivery().delivered;
                let outputs = if delivered == 1 { first } else { then };
                for (subject, data) in outputs {
                    natsapp_guest::publish(&subject, data)?;
                }
                if delivered == 1 {
                    return Err(Error::retry("the first delivery always fails"));
                }
                Ok(())
            }
            Op::PublishRetrying { subject, data, attempts, delay_ms } => {
                std::thread::sleep(Duration::from_millis(delay_ms));
                let mut errors = Vec::new();
                for _ in 0..attempts {
                    match natsapp_guest::publish(&subject, data.clone()) {
                        Ok(_) => break,
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                report("publish_retrying", json!({"errors": errors}))
            }
            Op::Respond { data } => {
                msg.respond_with_headers(data, &[("X-Answered-By".into(), "rust".into())])?;
                Ok(())
            }
            Op::Reply { data, after_ms } => {
                std::thread::sleep(Duration::from_millis(after_ms));
                let to = msg.reply().ok_or_else(|| Error::reject("no Reply-To header"))?;
                natsapp_guest::publish(&to, data)?;
                Ok(())
            }
        }
    }
}

export_handler!(TestKit);
