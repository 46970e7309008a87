//! What came of one local run: the verdict, what the handler sent, how the
//! runtime settled the message, and the guest's output — for a test to
//! assert on, and printed by `natsapp-wasm invoke` as text or JSON.

use super::local::Event;
pub use super::local::{KvWrite, Published, Request};
use crate::message::answer::ErrorAnswer;
use crate::message::{ByGuest, Outcome};
use crate::nats::ack::Ack;
use crate::nats::micro::{ERROR_CODE_HEADER, ERROR_HEADER};
use crate::settle::Disposition;
use crate::wasm::guest_log::GuestLine;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use std::fmt;
use std::time::Duration;

/// What the handler decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Handled: acked (by the runtime, or by the handler itself).
    Acked,
    /// To be redelivered: the handler returned `retry` or nak'd it.
    Retry {
        /// The delay asked for.
        delay: Option<Duration>,
        /// Why.
        reason: String,
    },
    /// Never to be redelivered: the handler returned `reject` or termed it.
    Rejected {
        /// Why.
        reason: String,
    },
    /// The handler failed: trap, panic, time or memory limit, instantiation.
    Failed {
        /// `trap`, `panic`, `timeout`, `memory_limit` or `instantiate`.
        cause: String,
        /// What happened.
        detail: String,
    },
    /// The message was not run: it cannot be one the subscriber receives.
    Refused(String),
}

impl Verdict {
    /// Its short name: ack, retry, reject, failure, refused.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Acked => "ack",
            Verdict::Retry { .. } => "retry",
            Verdict::Rejected { .. } => "reject",
            Verdict::Failed { .. } => "failure",
            Verdict::Refused(_) => "refused",
        }
    }

    /// The exit code `natsapp-wasm invoke` ends with: 0 ack, 3 retry,
    /// 4 reject, 5 failure, 2 refused.
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Acked => 0,
            Verdict::Refused(_) => 2,
            Verdict::Retry { .. } => 3,
            Verdict::Rejected { .. } => 4,
            Verdict::Failed { .. } => 5,
        }
    }
}

impl Published {
    /// The payload as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The payload parsed as JSON.
    pub fn json(&self) -> serde_json::Result<Value> {
        serde_json::from_slice(&self.payload)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A line the guest wrote.
pub type LogLine = GuestLine;

/// What came of one local run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The subscriber it ran as.
    pub subscriber: String,
    /// What the handler decided.
    pub verdict: Verdict,
    /// How the runtime settled the message: acked, naked, termed,
    /// dead_lettered, or settled_by_guest (the handler acked or nak'd it).
    pub settled: &'static str,
    /// The handler's publishes, in order.
    pub published: Vec<Published>,
    /// Its requests, in order.
    pub requests: Vec<Request>,
    /// Its key-value writes, in order.
    pub kv: Vec<KvWrite>,
    /// The acknowledgements the message got, in order: the handler's own,
    /// the runtime's in-progress signals, and its settlement.
    pub acks: Vec<Ack>,
    /// The dead-letter copy, when the runtime published one.
    pub dead_letter: Option<Published>,
    /// For an endpoint's request: the answer the requester got, the
    /// guest's or the runtime's error answer.
    pub answer: Option<Published>,
    /// What the guest wrote to stdout and stderr.
    pub log: Vec<LogLine>,
    /// How long `handle` took (instantiation included).
    pub duration: Duration,
}

impl Report {
    /// A run of `outcome`: `handled` is what the wire saw while the handler
    /// ran, `settling` what it saw while the runtime settled the message.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        subscriber: &str,
        outcome: &Outcome,
        by_guest: &ByGuest,
        decision: &Disposition,
        handled: Vec<Event>,
        settling: Vec<Event>,
        log: Vec<LogLine>,
        duration: Duration,
    ) -> Self {
        let mut report = Report {
            subscriber: subscriber.to_string(),
            verdict: Verdict::Acked,
            settled: decision.name(),
            published: Vec::new(),
            requests: Vec::new(),
            kv: Vec::new(),
            acks: Vec::new(),
            dead_letter: None,
            answer: None,
            log,
            duration,
        };
        for event in handled {
            match event {
                Event::Published(p) => report.published.push(p),
                Event::Requested(r) => report.requests.push(r),
                Event::KvWrite(w) => report.kv.push(w),
                Event::Acknowledged(ack) => report.acks.push(ack),
            }
        }
        let by_handler = report
            .acks
            .iter()
            .rev()
            .find(|a| !matches!(a, Ack::Progress))
            .cloned();
        for event in settling {
            match event {
                Event::Acknowledged(ack) => report.acks.push(ack),
                Event::Published(copy) => report.dead_letter = Some(copy),
                Event::Requested(_) | Event::KvWrite(_) => {}
            }
        }
        report.verdict = match (outcome, by_guest) {
            (Outcome::Failed { cause, detail }, _) => Verdict::Failed {
                cause: cause.as_str().to_string(),
                detail: detail.clone(),
            },
            (_, ByGuest::Term(reason)) => Verdict::Rejected {
                reason: reason
                    .clone()
                    .unwrap_or_else(|| "the handler terminated it".into()),
            },
            (_, ByGuest::Nak(delay)) => Verdict::Retry {
                delay: *delay,
                reason: "the handler nak'd it".into(),
            },
            (_, ByGuest::Settled) => match by_handler {
                Some(Ack::Nak(delay)) => Verdict::Retry {
                    delay,
                    reason: "the handler nak'd it".into(),
                },
                _ => Verdict::Acked,
            },
            (Outcome::Ok, ByGuest::Nothing | ByGuest::Ack) => Verdict::Acked,
            (Outcome::Retry { delay, reason }, ByGuest::Nothing | ByGuest::Ack) => Verdict::Retry {
                delay: *delay,
                reason: reason.clone(),
            },
            (Outcome::Reject(reason), ByGuest::Nothing | ByGuest::Ack) => Verdict::Rejected {
                reason: reason.clone(),
            },
        };
        report
    }

    /// A request to `endpoint` whose reply subject is `reply`, handled
    /// with `outcome`; `error` is the answer the runtime sends for it.
    /// Returning without answering is a failure (`no_response`).
    pub(super) fn answered(
        endpoint: &str,
        outcome: &Outcome,
        reply: &str,
        error: Option<&ErrorAnswer>,
        handled: Vec<Event>,
        log: Vec<LogLine>,
        duration: Duration,
    ) -> Self {
        let mut report = Report::new(
            endpoint,
            outcome,
            &ByGuest::Nothing,
            &Disposition::Ack,
            handled,
            Vec::new(),
            log,
            duration,
        );
        report.settled = if error.is_some() {
            "error_answer"
        } else {
            "answered"
        };
        let at = report.published.iter().position(|p| p.subject == reply);
        report.answer = match (at, error) {
            (Some(at), _) => Some(report.published.remove(at)),
            (None, Some(e)) => Some(Published {
                subject: reply.to_string(),
                headers: vec![
                    (ERROR_HEADER.to_string(), e.description.clone()),
                    (ERROR_CODE_HEADER.to_string(), e.code.to_string()),
                ],
                payload: Bytes::new(),
                stored: None,
            }),
            (None, None) => None,
        };
        if let (Outcome::Ok, Some(e)) = (outcome, error) {
            report.verdict = Verdict::Failed {
                cause: "no_response".into(),
                detail: format!("the handler returned without answering: answered {e}"),
            };
        }
        report
    }

    /// A message that was not run, for `why`.
    pub(super) fn refused(subscriber: &str, why: String) -> Self {
        Report {
            subscriber: subscriber.to_string(),
            verdict: Verdict::Refused(why),
            settled: "none",
            published: Vec::new(),
            requests: Vec::new(),
            kv: Vec::new(),
            acks: Vec::new(),
            dead_letter: None,
            answer: None,
            log: Vec::new(),
            duration: Duration::ZERO,
        }
    }

    /// The guest's stdout lines.
    pub fn stdout(&self) -> Vec<&str> {
        self.log
            .iter()
            .filter(|l| !l.stderr)
            .map(|l| l.text.as_str())
            .collect()
    }

    /// The report as one JSON object (what `invoke --json` prints).
    pub fn to_json(&self) -> Value {
        let mut verdict = json!({ "verdict": self.verdict.name() });
        match &self.verdict {
            Verdict::Acked => {}
            Verdict::Retry { delay, reason } => {
                verdict["delay_ms"] = json!(delay.map(|d| d.as_millis() as u64));
                verdict["reason"] = json!(reason);
            }
            Verdict::Rejected { reason } | Verdict::Refused(reason) => {
                verdict["reason"] = json!(reason)
            }
            Verdict::Failed { cause, detail } => {
                verdict["cause"] = json!(cause);
                verdict["detail"] = json!(detail);
            }
        }
        let mut out = json!({
            "subscriber": self.subscriber,
            "settled": self.settled,
            "duration_ms": self.duration.as_micros() as f64 / 1000.0,
            "published": self.published.iter().map(published_json).collect::<Vec<_>>(),
            "requests": self.requests.iter().map(|r| {
                let mut v = payload_json(&r.payload);
                v["subject"] = json!(r.subject);
                match &r.answer {
                    Ok(answer) => match std::str::from_utf8(answer) {
                        Ok(text) => v["answer"] = json!(text),
                        Err(_) => v["answer_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(answer)),
                    },
                    Err(e) => v["error"] = json!(e.to_string()),
                }
                v
            }).collect::<Vec<_>>(),
            "kv": self.kv.iter().map(|w| {
                let mut v = w.value.as_ref().map_or_else(|| json!({}), payload_json);
                v["bucket"] = json!(w.bucket);
                v["op"] = json!(w.op);
                v["key"] = json!(w.key);
                v["revision"] = json!(w.revision);
                v
            }).collect::<Vec<_>>(),
            "acks": self.acks.iter().map(ack_text).collect::<Vec<_>>(),
            "dead_letter": self.dead_letter.as_ref().map(published_json),
            "answer": self.answer.as_ref().map(published_json),
            "log": self.log.iter().map(|l| json!({
                "stream": if l.stderr { "stderr" } else { "stdout" },
                "line": l.text,
            })).collect::<Vec<_>>(),
        });
        if let (Value::Object(out), Value::Object(verdict)) = (&mut out, verdict) {
            out.extend(verdict);
        }
        out
    }
}

/// `{"payload": text}` for UTF-8, else `{"payload_base64": …}`.
fn payload_json(payload: &Bytes) -> Value {
    match std::str::from_utf8(payload) {
        Ok(text) => json!({ "payload": text }),
        Err(_) => json!({
            "payload_base64": base64::engine::general_purpose::STANDARD.encode(payload)
        }),
    }
}

fn published_json(p: &Published) -> Value {
    let mut v = payload_json(&p.payload);
    v["subject"] = json!(p.subject);
    v["headers"] = json!(p.headers);
    if let Some(ack) = &p.stored {
        v["stream"] = json!(ack.stream);
        v["sequence"] = json!(ack.sequence);
        v["duplicate"] = json!(ack.duplicate);
    }
    v
}

fn ack_text(ack: &Ack) -> String {
    match ack {
        Ack::Nak(Some(delay)) => format!("nak {}", humantime::format_duration(*delay)),
        Ack::Term(reason) if !reason.is_empty() => format!("term: {reason}"),
        other => other.name().to_string(),
    }
}

/// A payload shown in text: itself when it is short UTF-8 text.
fn shown(payload: &Bytes) -> String {
    const SHOWN: usize = 200;
    match std::str::from_utf8(payload) {
        Ok(text) if text.len() <= SHOWN => text.to_string(),
        Ok(text) => {
            let cut = (0..=SHOWN)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            format!("{}… ({} bytes)", &text[..cut], payload.len())
        }
        Err(_) => format!("<{} bytes of binary>", payload.len()),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let took =
            humantime::format_duration(Duration::from_micros(self.duration.as_micros() as u64));
        match &self.verdict {
            Verdict::Acked => writeln!(f, "ack ({took})")?,
            Verdict::Retry { delay, reason } => {
                let after = delay.map_or(String::new(), |d| {
                    format!(" after {}", humantime::format_duration(d))
                });
                writeln!(f, "retry{after}: {reason} ({took})")?
            }
            Verdict::Rejected { reason } => writeln!(f, "reject: {reason} ({took})")?,
            Verdict::Failed { cause, detail } => {
                writeln!(f, "failure ({cause}): {detail} ({took})")?
            }
            Verdict::Refused(why) => return writeln!(f, "not run: {why}"),
        }
        for line in &self.log {
            let stream = if line.stderr { "stderr" } else { "stdout" };
            writeln!(f, "  {stream}: {}", line.text)?;
        }
        for p in &self.published {
            let stored = p.stored.as_ref().map_or(" (core)".to_string(), |a| {
                let dup = if a.duplicate { ", duplicate" } else { "" };
                format!(" (stored: {} #{}{dup})", a.stream, a.sequence)
            });
            writeln!(f, "  publish {}{stored}: {}", p.subject, shown(&p.payload))?;
        }
        for r in &self.requests {
            match &r.answer {
                Ok(a) => writeln!(
                    f,
                    "  request {}: {} → {}",
                    r.subject,
                    shown(&r.payload),
                    shown(a)
                )?,
                Err(e) => writeln!(f, "  request {}: {} → {e}", r.subject, shown(&r.payload))?,
            }
        }
        for w in &self.kv {
            let value = w
                .value
                .as_ref()
                .map_or(String::new(), |v| format!(" = {}", shown(v)));
            let result = w
                .revision
                .map_or("lost (conflict)".to_string(), |r| format!("revision {r}"));
            writeln!(f, "  kv {} {}/{}{value}: {result}", w.op, w.bucket, w.key)?;
        }
        if let Some(d) = &self.dead_letter {
            writeln!(f, "  dead letter {}: {}", d.subject, shown(&d.payload))?;
        }
        if let Some(a) = &self.answer {
            match (a.header(ERROR_CODE_HEADER), a.header(ERROR_HEADER)) {
                (Some(code), description) => writeln!(
                    f,
                    "  answer: error {code} {}",
                    description.unwrap_or_default()
                )?,
                _ => writeln!(f, "  answer: {}", shown(&a.payload))?,
            }
            return writeln!(f, "  settled: {}", self.settled);
        }
        let acks: Vec<String> = self.acks.iter().map(ack_text).collect();
        writeln!(f, "  settled: {} [{}]", self.settled, acks.join(", "))
    }
}
