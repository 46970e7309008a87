//! Host of `natsapp:handler/types`: the `message` resource lent to `handle`.
//! The guest's ack, nak, term and in-progress go through the subscriber's
//! settler (`settle`), like the runtime's own.

use super::generated::natsapp::handler::types::{Delivery, Error, Host, HostMessage};
use super::{MessageHandle, NatsView};
use crate::error::ErrorChain;
use crate::settle::{GuestSettle, GuestSettleError};
use std::time::Duration;
use wasmtime::component::Resource;

/// The header that carries where a publisher wants an answer.
pub const REPLY_TO: &str = "Reply-To";

pub(crate) use crate::nats::header_pairs;

impl NatsView<'_> {
    fn check(&self, handle: &Resource<MessageHandle>) -> wasmtime::Result<()> {
        self.table.get(handle)?;
        Ok(())
    }

    /// The guest's own ack, nak or term, once.
    async fn settle(&mut self, what: GuestSettle) -> wasmtime::Result<Result<(), Error>> {
        if let Some(refused) = self.not_a_delivery() {
            return Ok(Err(refused));
        }
        let settler = self.sub.settler.clone();
        Ok(settler.by_guest(self.msg, what).await.map_err(guest_error))
    }
}

impl NatsView<'_> {
    /// Why ack, nak, term and in-progress do not apply to a request to an
    /// endpoint: nothing redelivers it, so there is nothing to settle, and
    /// its reply subject is the requester's.
    fn not_a_delivery(&self) -> Option<Error> {
        let request = self.msg.request.as_ref()?;
        Some(Error::Denied(format!(
            "a request to endpoint {:?} is not a JetStream delivery: there is nothing to acknowledge; answer it with respond or a publish to its reply subject, or fail to send an error answer",
            &*request.endpoint
        )))
    }
}

fn guest_error(e: GuestSettleError) -> Error {
    match e {
        GuestSettleError::AlreadySettled => Error::Denied(e.to_string()),
        GuestSettleError::Unavailable(e) => Error::Unavailable(ErrorChain(&e).to_string()),
    }
}

impl Host for NatsView<'_> {}

impl HostMessage for NatsView<'_> {
    async fn subject(&mut self, handle: Resource<MessageHandle>) -> wasmtime::Result<String> {
        self.check(&handle)?;
        Ok(self.msg.message.subject.as_str().to_owned())
    }

    async fn reply(&mut self, handle: Resource<MessageHandle>) -> wasmtime::Result<Option<String>> {
        self.check(&handle)?;
        if let Some(request) = &self.msg.request {
            return Ok(request.reply.as_ref().map(|r| r.as_str().to_owned()));
        }
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
        let d = &self.msg.delivery;
        Ok(Delivery {
            stream: d.stream.clone(),
            consumer: d.consumer.clone(),
            stream_sequence: d.stream_sequence,
            consumer_sequence: d.consumer_sequence,
            delivered: d.delivered,
            pending: d.pending,
            published_unix_ns: d.published_unix_ns,
        })
    }

    async fn ack(
        &mut self,
        handle: Resource<MessageHandle>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.check(&handle)?;
        self.settle(GuestSettle::Ack).await
    }

    async fn nak(
        &mut self,
        handle: Resource<MessageHandle>,
        delay_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.check(&handle)?;
        self.settle(GuestSettle::Nak(delay_ms.map(Duration::from_millis)))
            .await
    }

    async fn term(
        &mut self,
        handle: Resource<MessageHandle>,
        reason: Option<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.check(&handle)?;
        // The guest's text: its secrets stay out of the log, the server's
        // advisory and the dead-letter headers.
        let reason = reason.map(|r| self.sub.secrets.mask(&r));
        if let Some(r) = &reason {
            tracing::info!(subscriber = %self.sub.name, reason = %r, "handler terminated the message");
        }
        self.settle(GuestSettle::Term(reason)).await
    }

    async fn in_progress(
        &mut self,
        handle: Resource<MessageHandle>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.check(&handle)?;
        if let Some(refused) = self.not_a_delivery() {
            return Ok(Err(refused));
        }
        let settler = self.sub.settler.clone();
        Ok(settler.in_progress(self.msg).await.map_err(guest_error))
    }

    async fn respond(
        &mut self,
        handle: Resource<MessageHandle>,
        data: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.check(&handle)?;
        if let Some(request) = self.msg.request.as_ref().filter(|r| r.reply.is_some()) {
            return Ok(super::answer::answer(self.sub, self.msg, request, data, headers).await);
        }
        let to = self.reply(Resource::new_borrow(handle.rep())).await?;
        let Some(to) = to else {
            return Ok(Err(Error::Invalid(
                "the message has no reply address: no reply subject, no Reply-To header".into(),
            )));
        };
        use super::generated::natsapp::handler::publisher::Host as _;
        let sent = self.publish(to, data, headers).await?;
        Ok(sent.map(|_| ()))
    }

    async fn drop(&mut self, handle: Resource<MessageHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}
