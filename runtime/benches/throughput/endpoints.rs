//! Request/reply: Rust endpoints of natsapp-wasm against a raw async-nats
//! responder on the same server, each answering 100 requesters that send
//! their next request once answered, then the same 100 paced to 20,000
//! requests/s together (below what either side can answer: latency
//! without queueing), then one requester, for a few seconds per round.
//! Rounds alternate the sides; each row is the median of its rounds, its
//! ratio taken per round against the raw responder of the same round.
//! The raw responder and the `responder` guest do the same work: parse
//! the request, answer its `data` field with an `X-Answered-By` header.
//! The testkit answers alike after dispatching on the request's `op`.
//! `NATSAPP_BENCH_PERF=DIR` records a perf profile of the runtime during
//! the first round's 100 requesters.

use super::*;

const REQUESTERS: usize = 100;
/// The paced load's requests per second, all requesters together.
const PACED_RATE: f64 = 20_000.0;
const RAW_ENDPOINT: &str =
    "request/reply, raw async-nats responder (own connection, queue group, a task per request, the same answer)";
const WASM_ENDPOINT: &str =
    "request/reply, natsapp-wasm Rust endpoint (the same answer through respond, reused instances, concurrency 100)";
const TESTKIT_ENDPOINT: &str =
    "request/reply, natsapp-wasm Rust endpoint (the testkit: dispatches on op, then respond; reused instances, concurrency 100)";

/// Requesters, and the rate they send at together (`None`: each as fast
/// as it is answered).
type Load = (usize, Option<f64>);

/// One round of one side: answers per second, and the p50 and p99 latency.
struct Round {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Bench {
    pub(crate) async fn endpoints(&self, rounds: usize, seconds: u64) -> Vec<Row> {
        let payload = format!(r#"{{"op":"respond","data":"{}"}}"#, "x".repeat(PAYLOAD));
        // The raw responder is a process of its own, as a service is, and
        // as the runtime is: in this one, it would share a scheduler with
        // its requesters, which a service never does.
        let raw = std::process::Command::new(std::env::current_exe().unwrap())
            .env(RAW_RESPONDER, self.server.url())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        answered(&self.client, "bench.raw", &payload).await;
        // Both guests answer the same payload: the responder does only what
        // the raw responder does; the testkit dispatches on its `op` first.
        let sides = [
            ("bench.wasm", WASM_ENDPOINT, &self.responder),
            ("bench.testkit", TESTKIT_ENDPOINT, &self.testkit),
        ];
        let mut toml = format!(
            "[service]\nname = \"bench\"\ngraceful_timeout = \"2s\"\n[nats]\nservers = [\"{}\"]\n",
            self.server.url(),
        );
        for (subject, _, component) in &sides {
            toml += &format!(
                "[[endpoints]]\nname = \"{}\"\nsubject = \"{subject}\"\ncomponent = \"{}\"\n\
                 concurrency = {CONCURRENCY}\ninstances = \"reuse\"\n",
                subject.replace('.', "-"),
                component.display()
            );
        }
        let child = spawn(&toml, self.dir.path(), &self.warm_cache);
        for (subject, _, _) in &sides {
            answered(&self.client, subject, &payload).await;
        }
        // Rounds alternate the sides: 100 requesters as fast as answered,
        // then 100 at a rate well below what either side can answer (the
        // path's own latency under concurrency, without queueing), then one.
        let mut runs: [(Load, Vec<Round>, [Vec<Round>; 2]); 3] = [
            ((REQUESTERS, None), Vec::new(), Default::default()),
            (
                (REQUESTERS, Some(PACED_RATE)),
                Vec::new(),
                Default::default(),
            ),
            ((1, None), Vec::new(), Default::default()),
        ];
        for round in 1..=rounds {
            eprintln!("endpoints: round {round} of {rounds}");
            for (requesters, raws, wasms) in &mut runs {
                raws.push(load(&self.client, "bench.raw", &payload, seconds, *requesters).await);
                for ((subject, _, _), wasms) in sides.iter().zip(wasms.iter_mut()) {
                    let profile = (round == 1
                        && *requesters == (REQUESTERS, None)
                        && *subject == "bench.wasm")
                        .then(|| std::env::var_os("NATSAPP_BENCH_PERF"))
                        .flatten()
                        .map(|dir| {
                            noisy::perf_record(child.id(), &Path::new(&dir).join("endpoint.data"))
                        });
                    wasms.push(load(&self.client, subject, &payload, seconds, *requesters).await);
                    if let Some(perf) = profile {
                        noisy::interrupt(perf);
                    }
                }
            }
        }
        let (peak, _) = rss_mib(child.id());
        stop(child);
        stop(raw);
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let mut rows = Vec::new();
        for (requesters, raws, wasms) in &runs {
            let side = |rounds: &[Round], ratio, note: String, peak| Row {
                case: String::new(),
                msgs_per_s: Some(median(rounds.iter().map(|r| r.rate).collect())),
                ratio,
                p50_ms: Some(median(rounds.iter().map(|r| r.p50_ms).collect())),
                p99_ms: Some(median(rounds.iter().map(|r| r.p99_ms).collect())),
                peak_rss_mib: peak,
                note,
            };
            let who = match requesters {
                (1, _) => ", 1 requester".to_string(),
                (n, None) => format!(", {n} requesters"),
                (n, Some(rate)) => format!(", {n} requesters at {rate:.0} requests/s"),
            };
            rows.push(Row {
                case: format!("{RAW_ENDPOINT}{who}"),
                ..side(
                    raws,
                    Some(1.0),
                    format!("median of {rounds} rounds of {seconds} s"),
                    None,
                )
            });
            for ((_, case, _), wasms) in sides.iter().zip(wasms) {
                let per_round = |f: fn(&Round, &Round) -> f64| {
                    median(raws.iter().zip(wasms).map(|(r, w)| f(r, w)).collect())
                };
                let ratio = per_round(|r, w| w.rate / r.rate);
                let added = per_round(|r, w| w.p50_ms - r.p50_ms);
                rows.push(Row {
                    case: format!("{case}{who}"),
                    ..side(
                        wasms,
                        Some(ratio),
                        format!("× raw per round (median); p50 added over raw: {added:.3} ms"),
                        Some(peak),
                    )
                });
            }
        }
        rows
    }
}

/// Set to a server's URL, this binary is the raw responder on it and
/// nothing else.
pub(crate) const RAW_RESPONDER: &str = "NATSAPP_BENCH_RAW_RESPONDER";

/// Answers every request to `bench.raw` on `url` until killed.
pub(crate) async fn raw_responder_process(url: &str) {
    let client = async_nats::connect(url).await.unwrap();
    raw_responder(client, "bench.raw").await;
}

/// Answers every request to `subject` with its payload, each in a task of
/// its own, in a queue group: what a hand-written async-nats service does.
async fn raw_responder(client: async_nats::Client, subject: &'static str) {
    let mut requests = client.queue_subscribe(subject, "q".into()).await.unwrap();
    while let Some(request) = requests.next().await {
        let client = client.clone();
        tokio::spawn(async move {
            let Some(reply) = request.reply else { return };
            // The answer the responder guest sends: the request's
            // `data`, with an `X-Answered-By` header.
            #[derive(serde::Deserialize)]
            struct Respond {
                data: String,
            }
            let Ok(asked) = serde_json::from_slice::<Respond>(&request.payload) else {
                return;
            };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("X-Answered-By", "raw");
            let _ = client
                .publish_with_headers(reply, headers, asked.data.into())
                .await;
        });
    }
}

/// Waits until `subject` answers.
pub(crate) async fn answered(client: &async_nats::Client, subject: &str, payload: &str) {
    let t0 = Instant::now();
    loop {
        if client
            .request(subject.to_string(), payload.to_string().into())
            .await
            .is_ok()
        {
            return;
        }
        within(t0, "the endpoint to answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One request to `subject`, which must be answered without an error: its
/// latency in ms.
pub(crate) async fn ask(client: &async_nats::Client, subject: &str, payload: &str) -> f64 {
    let sent = Instant::now();
    let answer = client
        .request(subject.to_string(), payload.to_string().into())
        .await
        .expect("an answer");
    assert!(
        answer
            .headers
            .as_ref()
            .is_none_or(|h| h.get("Nats-Service-Error-Code").is_none()),
        "an error answer: {answer:?}"
    );
    sent.elapsed().as_secs_f64() * 1e3
}

/// `requesters` asking `subject` one request after another each, for
/// `seconds`: answers per second and their latencies.
async fn load(
    client: &async_nats::Client,
    subject: &str,
    payload: &str,
    seconds: u64,
    (requesters, paced): Load,
) -> Round {
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    // Paced, each requester sends at its share of the rate, their sends
    // spread over the interval; one answered late sends its next at once.
    let interval = paced.map(|rate| Duration::from_secs_f64(requesters as f64 / rate));
    let requesters = (0..requesters).map(|i| {
        let (client, subject, payload) = (client.clone(), subject.to_string(), payload.to_string());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut next =
                interval.map(|every| started + every.mul_f64(i as f64 / requesters as f64));
            while Instant::now() < until {
                if let (Some(at), Some(every)) = (next.as_mut(), interval) {
                    tokio::time::sleep_until((*at).into()).await;
                    *at += every;
                }
                latencies.push(ask(&client, &subject, &payload).await);
            }
            latencies
        })
    });
    let mut latencies: Vec<f64> = futures::future::join_all(requesters)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let round = Round {
        rate: latencies.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    };
    eprintln!(
        "{subject}: {:.0} answers/s, p50 {:.3} ms, p99 {:.3} ms",
        round.rate, round.p50_ms, round.p99_ms
    );
    round
}
