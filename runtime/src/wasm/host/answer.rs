//! A request's answer from its handler, through `respond` or a publish to
//! its reply subject: sent on the request's connection, once.

use super::generated::natsapp::handler::types::Error;
use super::headers::header_map;
use super::SubscriberHost;
use crate::error::ErrorChain;
use crate::grants::check_guest_headers;
use crate::message::{InFlight, Request};
use crate::nats::publish::Route;

/// Sends the guest's answer to the request being handled, on its reply
/// subject, which needs no grant: counted and paid for like any publish;
/// its first answer only, since the requester takes one.
pub(super) async fn answer(
    sub: &SubscriberHost,
    msg: &InFlight,
    request: &Request,
    data: Vec<u8>,
    headers: Vec<(String, String)>,
) -> Result<(), Error> {
    sub.count_call(msg)?;
    sub.pay(data.len())?;
    let mut map = header_map(headers)?;
    check_guest_headers(&mut map, &sub.id_namespace)?;
    let reply = request
        .reply
        .as_ref()
        .expect("answered on its reply subject");
    if !request.claim_answer() {
        return Err(Error::Denied(format!(
            "the request to endpoint {:?} was answered already: a requester takes one answer",
            &*request.endpoint
        )));
    }
    let send = sub.send_span(msg, reply, "publish", &mut map);
    let _call = msg.nats_call();
    // Sent once: a core publish waits in the client's queue through a
    // reconnection, and is refused only by a connection closed for
    // good, which no retry reopens.
    let sent = (sub.wire)
        .publish(Route::Core, reply.as_str().to_owned(), map, data.into())
        .await;
    if let Some(send) = send {
        send.finish(
            sent.as_ref()
                .err()
                .map(|e| (e.kind(), ErrorChain(e).to_string())),
        );
    }
    sent.map(|_| ()).map_err(|e| {
        // Not answered after all: the runtime answers for the outcome.
        request.release_answer();
        Error::from(e)
    })
}
