//! Host of `natsapp:handler/types`: the `message` resource lent to `handle`.
//! Settling from the guest goes straight to the server and marks the
//! delivery settled, so the runtime adds nothing afterwards.

use super::generated::natsapp::handler::types::{Delivery, Error, Host, HostMessage};
use super::{HostState, MessageHandle};
use async_nats::jetstream::AckKind;
use std::sync::atomic::Ordering;
use std::time::Duration;
use wasmtime::component::Resource;

/// The header that carries where a publisher wants an answer.
pub const REPLY_TO: &str = "Reply-To";

/// Header pairs as the WIT `headers` type carries them.
pub(crate) fn header_pairs(headers: Option<&async_nats::HeaderMap>) -> Vec<(String, String)> {
    let Some(headers) = headers else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(headers.len());
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        for v in values {
            out.push((name.to_string(), v.as_str().to_string()));
        }
    }
    out
}

impl HostState {
    fn check(&self, handle: &Resource<MessageHandle>) -> wasmtime::Result<()> {
        self.table.get(handle)?;
        Ok(())
    }

    /// Sends a settling acknowledgement (`ack`, `nak`, `term`) once.
    async fn settle(
        &mut self,
        kind: AckKind,
        reason: Option<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        if self.msg.settled.swap(true, Ordering::AcqRel) {
            return Ok(Err(Error::Denied("the message is already settled".into())));
        }
        let msg = &self.msg.message;
        let result = match (kind, reason) {
            (AckKind::Term, Some(reason)) => match &msg.reply {
                Some(reply) => self
                    .sub
                    .client
                    .publish(reply.clone(), format!("+TERM {reason}").into())
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("not a JetStream message".to_string()),
            },
            (kind, _) => msg.ack_with(kind).await.map_err(|e| e.to_string()),
        };
        Ok(result.map_err(|e| {
            self.msg.settled.store(false, Ordering::Release);
            Error::Unavailable(e)
        }))
    }
}

impl Host for HostState {}

impl HostMessage for HostState {
    async fn subject(&mut self, handle: Resource<MessageHandle>) -> wasmtime::Result<String> {
        self.check(&handle)?;
        Ok(self.msg.message.subject.to_string())
    }

    async fn reply(&mut self, handle: Resource<MessageHandle>) -> wasmtime::Result<Option<String>> {
        self.check(&handle)?;
        // A delivery's own reply subject is its ack subject, never the answer address.
        Ok(self
            .msg
            .message
            .headers
            .as_ref()
            .and_then(|h| h.get(REPLY_TO))
            .map(|v| v.as_str().to_string()))
    }

    async fn headers(
        &mut self,
        handle: Resource<MessageHandle>,
    ) -> wasmtime::Result<Vec<(String, String)>> {
        self.check(&handle)?;
        Ok(header_pairs(self.msg.message.headers.as_ref()))
    }

    async fn delivery(&mut self, handle: Resource<MessageHandle>) -> wasmtime::Result<Delivery> {
        self.check(&handle)?;
        Ok(self.msg.delivery.clone())
    }

    async fn ack(
        &mut self,
        handle: Resource<MessageHandle>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.check(&handle)?;
        self.settle(AckKind::Ack, None).await
    }

    async fn nak(
        &mut self,
        handle: Resource<MessageHandle>,
        delay_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.check(&handle)?;
        self.settle(AckKind::Nak(delay_ms.map(Duration::from_millis)), None)
            .await
    }

    async fn term(
        &mut self,
        handle: Resource<MessageHandle>,
        reason: Option<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.check(&handle)?;
        if let Some(r) = &reason {
            tracing::info!(subscriber = %self.sub.name, reason = %r, "handler terminated the message");
        }
        self.settle(AckKind::Term, reason).await
    }

    async fn in_progress(
        &mut self,
        handle: Resource<MessageHandle>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.check(&handle)?;
        if self.msg.settled_by_guest() {
            return Ok(Err(Error::Denied("the message is already settled".into())));
        }
        Ok(self
            .msg
            .message
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| Error::Unavailable(e.to_string())))
    }

    async fn drop(&mut self, handle: Resource<MessageHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}
