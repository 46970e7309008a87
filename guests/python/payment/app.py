"""The Python wrapper's payment example as a handler: validate the request
(invalid: reject, never retried), charge it through the payment service
over HTTP (a service error: retry), and publish the success event. An
idempotency record in the PAYMENTS bucket keeps a redelivered or repeated
request from charging twice, across replicas."""

import natsapp




def validate(data):
    if not isinstance(data, dict):
        raise natsapp.Reject("invalid payment: expected a JSON object")
    if not isinstance(data.get("payment_id"), str) or not data["payment_id"]:
        raise natsapp.Reject("invalid payment: needs a payment_id")
    if not isinstance(data.get("amount"), (int, float)) or data["amount"] <= 0:
        raise natsapp.Reject("invalid payment: needs a positive amount")
    if not isinstance(data.get("currency"), str):
        raise natsapp.Reject("invalid payment: needs a currency")
    return data


def charge(payment):
    resp = natsapp.http_request(
        "POST", natsapp.config("payment_url"),
        body={"payment_id": payment["payment_id"], "amount": payment["amount"], "currency": payment["currency"]},
        headers={"authorization": f"Bearer {natsapp.config('api_key', '')}",
                 "idempotency-key": payment["payment_id"]},
        timeout=10,
    )
    if 400 <= resp.status < 500:
        raise natsapp.Reject(f"payment declined ({resp.status}): {resp.text()}")
    if resp.status >= 500:
        raise natsapp.Retry(f"payment service error ({resp.status})")
    return {"payment_id": payment["payment_id"], "charge_id": resp.json()["charge_id"],
            "amount": payment["amount"], "currency": payment["currency"]}


def handle(data, msg):
    payment = validate(data)
    payments = natsapp.Bucket("PAYMENTS")
    key = f"charged.{payment['payment_id']}"
    done = payments.get(key)
    if done is not None:
        success = done.json()            # charged by an earlier delivery or another replica
    else:
        success = charge(payment)
        if payments.create(key, success) is None:
            success = payments.get(key).json()   # another replica stored its record first
    natsapp.publish("payment.success", success,
                    headers={"Nats-Msg-Id": f"payment-success-{payment['payment_id']}"})
