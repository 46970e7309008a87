//! A real HTTP server on loopback for the outbound HTTP tests: it answers,
//! stalls, fails, sends a large body or redirects, and counts the requests
//! it received.

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The server; stops when dropped.
pub struct WebServer {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    charges: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u32>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct State {
    hits: Arc<AtomicU64>,
    redirect_to: String,
    /// Charges made, by payment id (the payment-service stand-in).
    charges: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u32>>>,
}

impl WebServer {
    /// Listens on a free loopback port. `/redirect` answers 302 to `redirect_to`.
    ///
    /// - `GET /ok`: 200 `pong`
    /// - `POST /echo`: 200 with the request body, and its `x-echo` header back
    /// - `GET /fail`: 500 `payment service down`
    /// - `GET /stall`: waits a minute before answering
    /// - `GET /big`: 200 with 1 MiB of body
    /// - `POST /charge`: a payment service. Needs `Authorization: Bearer
    ///   test-key` (else 401); `{"payment_id", "amount"}` over 1000 is
    ///   declined (402); a payment id starting `flaky` fails once with 503;
    ///   else 200 `{"charge_id": "ch_<key>"}` for its `Idempotency-Key` (else
    ///   its payment id); `charges()` counts the successful calls per key.
    pub async fn start(redirect_to: &str) -> WebServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let charges = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
        let state = State {
            hits: hits.clone(),
            redirect_to: redirect_to.to_string(),
            charges: charges.clone(),
        };
        let counted = |state: &State| {
            state.hits.fetch_add(1, Ordering::Relaxed);
        };
        let router = axum::Router::new()
            .route(
                "/ok",
                axum::routing::get(
                    move |axum::extract::State(s): axum::extract::State<State>| async move {
                        counted(&s);
                        "pong"
                    },
                ),
            )
            .route(
                "/echo",
                axum::routing::post(
                    move |axum::extract::State(s): axum::extract::State<State>,
                          headers: HeaderMap,
                          body: String| async move {
                        counted(&s);
                        let echo = headers
                            .get("x-echo")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        ([("x-echo", echo)], body)
                    },
                ),
            )
            .route(
                "/fail",
                axum::routing::get(
                    move |axum::extract::State(s): axum::extract::State<State>| async move {
                        counted(&s);
                        (StatusCode::INTERNAL_SERVER_ERROR, "payment service down")
                    },
                ),
            )
            .route(
                "/stall",
                axum::routing::get(
                    move |axum::extract::State(s): axum::extract::State<State>| async move {
                        counted(&s);
                        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                        "too late"
                    },
                ),
            )
            .route(
                "/big",
                axum::routing::get(
                    move |axum::extract::State(s): axum::extract::State<State>| async move {
                        counted(&s);
                        vec![b'x'; 1 << 20]
                    },
                ),
            )
            .route("/charge", axum::routing::post(charge))
            .route(
                "/redirect",
                axum::routing::get(
                    move |axum::extract::State(s): axum::extract::State<State>| async move {
                        counted(&s);
                        (StatusCode::FOUND, [("location", s.redirect_to.clone())]).into_response()
                    },
                ),
            )
            .with_state(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        WebServer {
            addr,
            hits,
            charges,
            task,
        }
    }

    /// Charges made so far, by payment id.
    pub fn charges(&self) -> std::collections::BTreeMap<String, u32> {
        self.charges.lock().unwrap().clone()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// The payment service's `POST /charge`.
async fn charge(
    axum::extract::State(s): axum::extract::State<State>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    s.hits.fetch_add(1, Ordering::Relaxed);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer test-key") {
        return (StatusCode::UNAUTHORIZED, "bad api key").into_response();
    }
    let Ok(payment) = serde_json::from_str::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let id = payment["payment_id"].as_str().unwrap_or("").to_string();
    if payment["amount"].as_f64().unwrap_or(0.0) > 1000.0 {
        return (
            StatusCode::PAYMENT_REQUIRED,
            r#"{"error":"declined: over the limit"}"#,
        )
            .into_response();
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(&id)
        .to_string();
    {
        let mut charges = s.charges.lock().unwrap();
        let attempts = charges.entry(format!("attempts:{key}")).or_insert(0);
        *attempts += 1;
        if key.starts_with("flaky") && *attempts == 1 {
            return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
        }
        *charges.entry(key.clone()).or_insert(0) += 1;
    }
    (
        [("content-type", "application/json")],
        serde_json::json!({"charge_id": format!("ch_{key}")}).to_string(),
    )
        .into_response()
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
