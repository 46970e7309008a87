//! The Python wrapper's payment example as a handler: validate the request
//! (invalid: reject, never retried), charge it through the payment service
//! over HTTP (a service error: retry), and publish the success event. An
//! idempotency record in the PAYMENTS bucket keeps a redelivered or
//! repeated request from charging twice, across replicas.

use natsapp_guest::kv::Bucket;
use natsapp_guest::{config, export_handler, http, Data, Error, Handler, Message, Result};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct PaymentRequest {
    payment_id: String,
    amount: f64,
    currency: String,
}

#[derive(Serialize, Deserialize)]
struct PaymentSuccess {
    payment_id: String,
    charge_id: String,
    amount: f64,
    currency: String,
}

struct Payment;

impl Handler for Payment {
    fn handle(data: Data, _msg: &Message) -> Result {
        let payment: PaymentRequest =
            serde_json::from_slice(data.bytes()).map_err(|e| Error::reject(format!("invalid payment: {e}")))?;
        if payment.amount <= 0.0 || payment.payment_id.is_empty() {
            return Err(Error::reject("invalid payment: needs a payment_id and a positive amount"));
        }
        let payments = Bucket::new("PAYMENTS");
        let key = format!("charged.{}", payment.payment_id);
        let success = match payments.get_json::<PaymentSuccess>(&key)? {
            // Charged by an earlier delivery, or by another replica.
            Some(done) => done,
            None => {
                let charged = charge(&payment)?;
                // One record per payment, whoever stores it first.
                match payments.create(&key, serde_json::to_vec(&charged).unwrap_or_default())? {
                    Some(_) => charged,
                    None => payments.get_json(&key)?.ok_or_else(|| Error::retry("idempotency record vanished"))?,
                }
            }
        };
        let id = format!("payment-success-{}", success.payment_id);
        let event = serde_json::to_vec(&success).unwrap_or_default();
        natsapp_guest::publish_with_headers("payment.success", event, &[("Nats-Msg-Id", id.as_str())])?;
        Ok(())
    }
}

/// Charges `payment`; a declined one rejects, a failing service retries.
fn charge(payment: &PaymentRequest) -> Result<PaymentSuccess> {
    let url = config::get("payment_url").ok_or_else(|| Error::reject("config payment_url is not set"))?;
    let key = config::get("api_key").unwrap_or_default();
    let body = serde_json::json!({"payment_id": payment.payment_id, "amount": payment.amount, "currency": payment.currency});
    let resp = http::Request::post(&url)
        .header("authorization", &format!("Bearer {key}"))
        .header("idempotency-key", &payment.payment_id)
        .json(&body)?
        .send()?;
    match resp.status {
        200..=299 => {
            #[derive(Deserialize)]
            struct Charged {
                charge_id: String,
            }
            let charged: Charged = resp.json()?;
            Ok(PaymentSuccess {
                payment_id: payment.payment_id.clone(),
                charge_id: charged.charge_id,
                amount: payment.amount,
                currency: payment.currency.clone(),
            })
        }
        400..=499 => Err(Error::reject(format!("payment declined ({}): {}", resp.status, resp.text()))),
        status => Err(Error::retry(format!("payment service error ({status})"))),
    }
}

export_handler!(Payment);
