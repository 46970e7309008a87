//! Host of `natsapp:handler/publisher`: the guest's `publish` and `request`,
//! limited by `grants` (the allow-list, the system-subject fence, the reply
//! path, the `Nats-*` headers).

use super::answer::answer;
use super::generated::natsapp::handler::publisher::{Host, PublishAck, Response};
use super::generated::natsapp::handler::types::Error;
use super::headers::header_map;
use super::later;
use super::types::{header_pairs, REPLY_TO};
use super::{NatsView, SubscriberHost};
use crate::error::ErrorChain;
use crate::grants::{check_guest_headers, check_subject_grant, Refused, Use, TTL};
use crate::message::pipeline::Pending;
use crate::message::trace::SendSpan;
use crate::message::InFlight;
use crate::nats::publish::{PublishError, Route};
use crate::nats::unavailable::retrying;
use crate::nats::wire::{PubAckFuture, RequestError};
use crate::outputs::held::{Bounds, Target};
use crate::outputs::OutputId;
use async_nats::HeaderMap;
use std::time::Duration;

pub use crate::nats::publish::PublishRoutes;

impl From<Refused> for Error {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Invalid(m) => Error::Invalid(m),
            Refused::Denied(m) => Error::Denied(m),
        }
    }
}

impl NatsView<'_> {
    /// Checks the grant of `subject` and counts the call against the
    /// tenant's `publishes_per_message` quota.
    fn allowed(&self, subject: &str, what: Use) -> Result<(), Error> {
        self.sub.count_call(self.msg)?;
        let reply_to = match &self.msg.request {
            Some(request) => request.reply.as_ref().map(|r| r.as_str()),
            None => self
                .msg
                .message
                .headers
                .as_ref()
                .and_then(|h| h.get(REPLY_TO))
                .map(|v| v.as_str()),
        };
        Ok(check_subject_grant(
            &self.sub.name,
            &self.sub.allow,
            subject,
            what,
            reply_to,
        )?)
    }

    /// With atomic outputs: holds the publish until the commit after
    /// `handle`. Its result carries no PubAck, as nothing is stored yet.
    fn hold(
        &self,
        subject: String,
        data: Vec<u8>,
        mut map: HeaderMap,
        limit: u64,
    ) -> Result<Option<PublishAck>, Error> {
        // After the check, a Nats-Msg-Id can only be the guest's own.
        check_guest_headers(&mut map, &self.sub.id_namespace)?;
        if map.get("Nats-Msg-Id").is_some() {
            return Err(Error::Invalid(
                "with outputs.mode = \"atomic\" the runtime sets each output's Nats-Msg-Id: the server rejects a whole batch in which one id is already stored, so a handler's own id is not accepted".into(),
            ));
        }
        let target = match self.sub.routes.stream(&subject) {
            Some((name, timeout)) => Target::Stream { name, timeout },
            None => Target::Core,
        };
        let send = (self.sub).send_span(self.msg, &subject, "publish", &mut map);
        let input = format!("{}:{}", self.sub.id_namespace, self.msg.sequence);
        let bounds = Bounds {
            bytes: limit,
            max_payload: self.sub.wire.max_payload(),
        };
        let held = self.msg.held.lock().expect("held lock").hold(
            target,
            subject,
            map,
            data.into(),
            &input,
            bounds,
        );
        if let Some(send) = send {
            send.finish(held.as_ref().err().map(|e| ("invalid", e.to_string())));
        }
        held.map(|()| None)
            .map_err(|e| Error::Invalid(e.to_string()))
    }
}

/// A publish to a stream, ready to send.
struct Output {
    subject: String,
    headers: HeaderMap,
    payload: bytes::Bytes,
    /// How long its PubAck is awaited.
    timeout: Duration,
}

/// With pipelined outputs: sends `output` to its stream and leaves its
/// PubAck for the settler to await after `handle`. Returns no PubAck, as
/// none is awaited yet, and an error only when the output can never be
/// stored; one that failed for want of NATS is sent again by the settler,
/// as a PubAck that fails is.
async fn send_pipelined(
    sub: &SubscriberHost,
    msg: &InFlight,
    output: Output,
    id: Option<OutputId>,
    span: Option<SendSpan>,
) -> Result<Option<PublishAck>, Error> {
    let sent = std::time::Instant::now();
    let Output {
        subject,
        headers,
        payload,
        timeout,
    } = output;
    let ack = {
        let _call = msg.nats_call();
        sub.wire
            .send_to_stream(&subject, headers.clone(), payload.clone(), timeout)
            .await
    };
    let ack: PubAckFuture = match ack {
        Ok(ack) => ack,
        Err(e) if e.unavailable() => Box::pin(std::future::ready(Err(e))),
        Err(e) => {
            sub.settler.stats.published(sent.elapsed(), false);
            if let Some(span) = span {
                span.finish(Some((e.kind(), ErrorChain(&e).to_string())));
            }
            return Err(e.into());
        }
    };
    if let Some(id) = &id {
        msg.outputs.stored(id);
    }
    msg.pipeline.push(Pending {
        ack,
        subject,
        headers,
        payload,
        timeout,
        sent,
        span,
    });
    Ok(None)
}

impl From<PublishError> for Error {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Timeout { .. } => Error::Timeout,
            PublishError::Unavailable { .. } => Error::Unavailable(ErrorChain(&e).to_string()),
            PublishError::Invalid { .. } => Error::Invalid(ErrorChain(&e).to_string()),
        }
    }
}

impl Host for NatsView<'_> {
    async fn publish(
        &mut self,
        subject: String,
        data: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<Option<PublishAck>, Error>> {
        let (sub, msg) = (self.sub, &**self.msg);
        if let Some(request) = &msg.request {
            if request
                .reply
                .as_ref()
                .is_some_and(|r| r.as_str() == subject)
            {
                return Ok(answer(sub, msg, request, data, headers)
                    .await
                    .map(|()| None));
            }
        }
        if let Err(e) = self
            .allowed(&subject, Use::Publish)
            .and_then(|()| self.sub.pay(data.len()))
        {
            return Ok(Err(e));
        }
        let (delay, headers) = match later::take_delay(headers) {
            Ok(split) => split,
            Err(e) => return Ok(Err(e.into())),
        };
        let mut map = match header_map(headers) {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(limit) = self.sub.held_outputs {
            if delay.is_some() || map.get(TTL).is_some() {
                return Ok(Err(Error::Invalid(format!(
                    "with outputs.mode = \"atomic\" outputs are stored together at once: {} and {TTL} are not accepted",
                    later::DELAY
                ))));
            }
            return Ok(self.hold(subject, data, map, limit));
        }
        if let Err(e) = check_guest_headers(&mut map, &self.sub.id_namespace) {
            return Ok(Err(e.into()));
        }
        let route = self.sub.routes.route(&subject);
        let output_id = match route {
            Route::JetStream(_) if map.get("Nats-Msg-Id").is_none() => {
                let id = self.msg.outputs.id(
                    self.sub.output_ids,
                    &self.sub.id_namespace,
                    self.msg.sequence,
                    &subject,
                    &data,
                );
                map.insert("Nats-Msg-Id", id.id.as_str());
                Some(id)
            }
            _ => None,
        };
        let acked_by_stream = matches!(route, Route::JetStream(_));
        // A delayed output is stored on a subject of its own until it fires.
        let stored_on = match delay {
            None => subject.clone(),
            Some(delay) => {
                let id = map.get("Nats-Msg-Id").map(|v| v.to_string());
                let now = std::time::SystemTime::now();
                let routes = &self.sub.routes;
                match later::hold(
                    &map,
                    &subject,
                    id.as_deref().unwrap_or_default(),
                    delay,
                    now,
                    routes,
                ) {
                    Ok(held) => {
                        map = held.headers;
                        held.subject
                    }
                    Err(e) => return Ok(Err(e.into())),
                }
            }
        };
        let send = (self.sub).send_span(self.msg, &subject, "publish", &mut map);
        if let (true, Route::JetStream(timeout)) = (self.sub.pipelined, route) {
            let output = Output {
                subject: stored_on,
                headers: map,
                payload: data.into(),
                timeout,
            };
            let (sub, msg) = (self.sub, &**self.msg);
            return Ok(send_pipelined(sub, msg, output, output_id, send).await);
        }
        let started = std::time::Instant::now();
        let (sub, msg) = (self.sub, &**self.msg);
        let data = bytes::Bytes::from(data);
        let _call = msg.nats_call();
        let sent = retrying(
            || format!("subscriber {:?}: publish to {subject:?}", &*sub.name),
            sub.settler.patience(msg),
            || {
                let (subject, map, data) = (stored_on.clone(), map.clone(), data.clone());
                sub.wire.publish(route, subject, map, data)
            },
            PublishError::unavailable,
            || sub.wire.connected(),
            |waited| sub.waited_for_nats(msg, waited),
        )
        .await;
        if acked_by_stream {
            self.sub
                .settler
                .stats
                .published(started.elapsed(), sent.is_ok());
        }
        if let Some(send) = send {
            send.finish(
                sent.as_ref()
                    .err()
                    .map(|e| (e.kind(), ErrorChain(e).to_string())),
            );
        }
        if let (Ok(_), Some(id)) = (&sent, &output_id) {
            self.msg.outputs.stored(id);
        }
        Ok(sent
            .map(|ack| {
                ack.map(|a| PublishAck {
                    stream: a.stream,
                    sequence: a.sequence,
                    duplicate: a.duplicate,
                })
            })
            .map_err(Error::from))
    }

    async fn request(
        &mut self,
        subject: String,
        data: Vec<u8>,
        headers: Vec<(String, String)>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Response, Error>> {
        if let Err(e) = self
            .allowed(&subject, Use::Request)
            .and_then(|()| self.sub.pay(data.len()))
        {
            return Ok(Err(e));
        }
        if self.sub.held_outputs.is_some() && self.sub.routes.stream(&subject).is_some() {
            return Ok(Err(Error::Invalid(format!(
                "with outputs.mode = \"atomic\" a request to {subject:?}, which a stream stores, would store it at once whatever the handler's outcome: publish it instead"
            ))));
        }
        let mut map = match header_map(headers) {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = check_guest_headers(&mut map, &self.sub.id_namespace) {
            return Ok(Err(e.into()));
        }
        let send = (self.sub).send_span(self.msg, &subject, "request", &mut map);
        let timeout = Duration::from_millis(timeout_ms.into());
        let (sub, msg) = (self.sub, &**self.msg);
        let data = bytes::Bytes::from(data);
        // A request that failed while the connection is down is made again
        // once it is back; with it up, no answer is the responder's doing.
        let asked = retrying(
            || format!("subscriber {:?}: request to {subject:?}", &*sub.name),
            sub.settler.patience(msg),
            || {
                let (subject, map, data) = (subject.clone(), map.clone(), data.clone());
                sub.wire.request(subject, map, data, timeout)
            },
            |e| {
                !sub.wire.connected()
                    && matches!(e, RequestError::TimedOut | RequestError::Failed { .. })
            },
            || sub.wire.connected(),
            |waited| sub.waited_for_nats(msg, waited),
        )
        .await;
        let answered = match asked {
            Ok(reply) => Ok(Response {
                data: reply.payload.to_vec(),
                headers: header_pairs(reply.headers.as_ref()),
            }),
            Err(e) => Err(match e {
                RequestError::TimedOut => Error::Timeout,
                RequestError::NoResponders(_) => Error::Unavailable(e.to_string()),
                RequestError::Invalid { .. } => Error::Invalid(ErrorChain(&e).to_string()),
                RequestError::Failed { .. } => Error::Other(ErrorChain(&e).to_string()),
            }),
        };
        if let Some(send) = send {
            send.finish(answered.as_ref().err().map(|e| {
                let kind = match e {
                    Error::Timeout => "timeout",
                    Error::Unavailable(_) => "unavailable",
                    Error::Invalid(_) => "invalid",
                    _ => "other",
                };
                (kind, e.to_string())
            }));
        }
        Ok(answered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_validated_not_asserted() {
        let ok = header_map(vec![("X-A".into(), "1".into()), ("X-A".into(), "2".into())]).unwrap();
        assert_eq!(
            ok.get_all("X-A")
                .map(|v| v.as_str().to_string())
                .collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert!(matches!(
            header_map(vec![("Bad:Name".into(), "v".into())]),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            header_map(vec![("X".into(), "line\nbreak".into())]),
            Err(Error::Invalid(_))
        ));
    }
}
