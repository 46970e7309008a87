// The Python wrapper's payment example as a handler: validate the request
// (invalid: reject, never retried), charge it through the payment service
// with fetch (a service error: retry), and publish the success event. An
// idempotency record in the PAYMENTS bucket keeps a redelivered or repeated
// request from charging twice, across replicas.

import { Bucket, Reject, Retry, config, publish } from "./natsapp.js";

function validate(data) {
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new Reject("invalid payment: expected a JSON object");
  }
  if (typeof data.payment_id !== "string" || data.payment_id === "") throw new Reject("invalid payment: needs a payment_id");
  if (typeof data.amount !== "number" || data.amount <= 0) throw new Reject("invalid payment: needs a positive amount");
  if (typeof data.currency !== "string") throw new Reject("invalid payment: needs a currency");
  return data;
}

async function charge(payment) {
  const resp = await fetch(config("payment_url"), {
    method: "POST",
    headers: {
      "content-type": "application/json",
      authorization: `Bearer ${config("api_key", "")}`,
      "idempotency-key": payment.payment_id,
    },
    body: JSON.stringify({ payment_id: payment.payment_id, amount: payment.amount, currency: payment.currency }),
  });
  if (resp.status >= 400 && resp.status < 500) throw new Reject(`payment declined (${resp.status}): ${await resp.text()}`);
  if (resp.status >= 500) throw new Retry(`payment service error (${resp.status})`);
  const { charge_id } = await resp.json();
  return { payment_id: payment.payment_id, charge_id, amount: payment.amount, currency: payment.currency };
}

export async function handle(data) {
  const payment = validate(data);
  const payments = new Bucket("PAYMENTS");
  const key = `charged.${payment.payment_id}`;
  const done = payments.get(key);
  let success;
  if (done) {
    success = done.json(); // charged by an earlier delivery or another replica
  } else {
    success = await charge(payment);
    if (payments.create(key, success) === null) success = payments.get(key).json(); // another replica won
  }
  publish("payment.success", success, { "Nats-Msg-Id": `payment-success-${payment.payment_id}` });
}
