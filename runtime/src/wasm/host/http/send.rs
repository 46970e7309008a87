//! Sends one guest request to addresses already checked: connect (the
//! first address that answers), TLS for `https`, HTTP/1.1 over hyper.
//!
//! Adapted from wasmtime-wasi-http's `default_send_request`, which resolves
//! the name again when it connects: a name checked and then resolved anew
//! could point elsewhere the second time (DNS rebinding), so this sender
//! connects only to the addresses the grant check saw. The response body
//! keeps the between-bytes timeout and adds the size limit.

use crate::counters::HttpOutcome;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::Error;

/// How long each step may wait.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect, TLS and HTTP handshakes.
    pub connect: Duration,
    /// From the request sent to the response head.
    pub first_byte: Duration,
    /// Between two chunks of the response body.
    pub between_bytes: Duration,
}

/// What bounds a response body.
pub struct BodyLimit {
    /// The most bytes it may have.
    pub max: u64,
    /// Called once when the body fails after its head came: cut at `max`
    /// (`TooLarge`), a gap past the timeout (`Timeout`), a broken
    /// connection (`Failed`).
    pub failed: Box<dyn Fn(HttpOutcome) + Send + Sync>,
    /// Held until the body is read or dropped (the tenant's `http_concurrency`).
    pub permit: Option<OwnedSemaphorePermit>,
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T> Stream for T where T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

/// The TLS settings every request shares: the Mozilla root certificates
/// compiled into `webpki-roots`; no client certificate.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
            )
        })
        .clone()
}

/// The response and the future that finishes its connection.
pub type Sent = (
    http::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// Sends `req` to the first of `addrs` that accepts a connection, as
/// `host` (the TLS server name) when `tls`; `head` for a HEAD request,
/// whose response announces a length it does not send.
pub async fn send(
    mut req: http::Request<wasmtime_wasi_http::WasiBody>,
    addrs: &[SocketAddr],
    host: &str,
    tls: bool,
    timeouts: Timeouts,
    limit: BodyLimit,
    head: bool,
) -> Result<Sent, Error> {
    let mut last = Error::ConnectionRefused;
    let mut connected = None;
    for addr in addrs {
        match tokio::time::timeout(timeouts.connect, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                connected = Some(stream);
                break;
            }
            Ok(Err(e)) => last = Error::Connect(e),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    let stream = connected.ok_or(last)?;
    let stream: Box<dyn Stream> = if tls {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(tls_config());
        let handshake = connector.connect(name, stream);
        Box::new(
            tokio::time::timeout(timeouts.connect, handshake)
                .await
                .map_err(|_| Error::ConnectionTimeout)?
                .map_err(Error::Tls)?,
        )
    } else {
        Box::new(stream)
    };
    let (mut sender, conn) = tokio::time::timeout(
        timeouts.connect,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // The request line carries the path only; the authority is in `Host`.
    *req.uri_mut() = http::Uri::builder()
        .path_and_query(req.uri().path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .expect("comes from a valid request");

    let send = async move {
        let res = tokio::time::timeout(timeouts.first_byte, sender.send_request(req))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)??;
        let bodiless = head
            || res.status().is_informational()
            || res.status() == http::StatusCode::NO_CONTENT
            || res.status() == http::StatusCode::NOT_MODIFIED;
        let announced = res
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|length| length > limit.max && !bodiless) {
            (limit.failed)(HttpOutcome::TooLarge);
            return Err(Error::HttpResponseBodySize(Some(limit.max)));
        }
        let mut between_bytes =
            tokio::time::interval(timeouts.between_bytes.max(Duration::from_millis(1)));
        between_bytes.reset();
        Ok(res.map(|incoming| ResponseBody {
            incoming,
            between_bytes,
            received: 0,
            limit,
            ended: None,
        }))
    };
    let mut send = pin!(send);
    let mut conn = Some(conn);
    // Wait for the response while driving the connection's I/O.
    let res = poll_fn(|cx| match send.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            let Some(fut) = conn.as_mut() else {
                return Poll::Pending;
            };
            let done = ready!(Pin::new(fut).poll(cx));
            conn = None;
            match done {
                Ok(()) => send.as_mut().poll(cx),
                Err(err) => Poll::Ready(Err(Error::from(err))),
            }
        }
    })
    .await?;
    let finish = async move {
        match conn.take() {
            None => Ok(()),
            Some(conn) => conn.await.map_err(|err| {
                if err.is_timeout() {
                    Error::HttpResponseTimeout
                } else {
                    Error::from(err)
                }
            }),
        }
    };
    Ok((
        res.map(http_body_util::BodyExt::boxed_unsync),
        Box::new(finish),
    ))
}

/// A response body with a between-bytes timeout and a size limit.
struct ResponseBody {
    incoming: hyper::body::Incoming,
    between_bytes: tokio::time::Interval,
    received: u64,
    limit: BodyLimit,
    /// How it failed: every later poll fails the same way.
    ended: Option<HttpOutcome>,
}

impl ResponseBody {
    /// The error a body that ended with `outcome` gives.
    fn error(&self, outcome: HttpOutcome) -> Error {
        match outcome {
            HttpOutcome::TooLarge => Error::HttpResponseBodySize(Some(self.limit.max)),
            HttpOutcome::Timeout => Error::ConnectionReadTimeout,
            _ => Error::HttpResponseIncomplete,
        }
    }

    /// Ends the body with `outcome`: counted once, the permit given back.
    fn end(
        &mut self,
        outcome: HttpOutcome,
        error: Error,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.ended = Some(outcome);
        self.limit.permit = None;
        (self.limit.failed)(outcome);
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if let Some(outcome) = self.ended {
            return Poll::Ready(Some(Err(self.error(outcome))));
        }
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => {
                self.limit.permit = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) if err.is_timeout() => {
                self.end(HttpOutcome::Timeout, Error::HttpResponseTimeout)
            }
            Poll::Ready(Some(Err(err))) => self.end(HttpOutcome::Failed, Error::from(err)),
            Poll::Ready(Some(Ok(frame))) => {
                self.between_bytes.reset();
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                    if self.received > self.limit.max {
                        let error = self.error(HttpOutcome::TooLarge);
                        return self.end(HttpOutcome::TooLarge, error);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.between_bytes.poll_tick(cx));
                self.end(HttpOutcome::Timeout, Error::ConnectionReadTimeout)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
