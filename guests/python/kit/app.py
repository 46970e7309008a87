"""Test handler for the Python SDK: the JSON payload's "op" says what to do.
Results the tests check are published to testkit.out.<op>."""

import natsapp


class Model:
    """Stands in for a Pydantic v2 model."""

    def model_dump(self, mode="python"):
        return {"kind": "model", "mode": mode}


class LegacyModel:
    """Stands in for a Pydantic v1 model."""

    def dict(self):
        return {"kind": "legacy"}


# Warm-ups this instance had (the runtime runs one on instances made ahead),
# and why a publish in one was refused.
WARMED = 0
WARM_UP_REFUSED = None


def warm_up():
    global WARMED, WARM_UP_REFUSED
    mode = natsapp.config("warm_up")
    if mode == "raise":
        raise RuntimeError("warm-up refused")
    if mode == "publish":
        try:
            natsapp.publish("testkit.out.warm_up", {"from": "warm-up"})
        except natsapp.Denied as e:
            WARM_UP_REFUSED = str(e)
    WARMED += 1


def handle(data, msg):
    if msg.kv_key is not None:
        # A watched bucket's change: reported, then its value run as an op.
        natsapp.publish("testkit.out.kvchange", {"key": msg.kv_key, "operation": msg.kv_operation, "revision": msg.kv_revision})
        if not msg.data:
            return
    if not isinstance(data, dict):
        # What the default parser made of a payload that is not an op.
        value = list(data) if isinstance(data, bytes) else data
        natsapp.publish("testkit.out.parsed", {"type": type(data).__name__, "value": value})
        return
    op = data["op"]
    if op == "raise":
        raise ValueError(data["message"])
    if op == "reject":
        raise natsapp.Reject(data["reason"])
    if op == "retry":
        raise natsapp.Retry("asked to retry", delay=data["delay_ms"] / 1000)
    if op == "warmed":
        natsapp.publish("testkit.out.warmed", {"warmed": WARMED, "refused": WARM_UP_REFUSED})
        return
    if op == "respond":
        msg.respond(data["data"], {"X-Answered-By": "python"})
        return
    if op == "publish":
        ack = natsapp.publish(data["subject"], data["data"])
        natsapp.publish("testkit.out.publish", {"stream": ack.stream, "sequence": ack.sequence, "duplicate": ack.duplicate})
    elif op == "later":
        delay, ttl = data.get("delay_ms"), data.get("ttl_ms")
        try:
            ack = natsapp.publish(data["subject"], data["data"], delay=None if delay is None else delay / 1000,
                                  ttl=None if ttl is None else ttl / 1000)
            natsapp.publish("testkit.out.later", {"stream": ack.stream})
        except natsapp.HostError as e:
            natsapp.publish("testkit.out.later", {"error": str(e)})
    elif op == "ack":
        msg.ack()
        raise RuntimeError("failing after my own ack")
    elif op == "info":
        d = msg.delivery
        natsapp.publish("testkit.out.info", {
            "subject": msg.subject, "trace": msg.header("X-Trace"), "delivered": d.delivered,
            "stream": d.stream, "region": natsapp.config("region"), "data": data,
        })
    elif op == "denied":
        natsapp.publish(data["subject"], "x")
    elif op == "encodings":
        for value in [b"\x00raw", "text", [1, 2], {"a": 1}, Model(), LegacyModel(), None]:
            natsapp.publish("testkit.out.enc", value)
    elif op == "term":
        msg.term("not for us")
    elif op == "http":
        try:
            resp = natsapp.http_request(data["method"], data["url"], body=data.get("body"),
                                        headers={"x-echo": "from python"}, timeout=data.get("timeout"))
            natsapp.publish("testkit.out.http", {"status": resp.status, "body": resp.text(), "echo": resp.header("x-echo")})
        except natsapp.HttpError as e:
            natsapp.publish("testkit.out.http", {"error": str(e), "kind": e.kind})
    elif op == "kv":
        bucket = natsapp.Bucket(data["bucket"])
        key = data["key"]
        first = bucket.create(key, {"n": 1})
        again = bucket.create(key, "again")
        entry = bucket.get(key)
        second = bucket.update(key, {"n": 2}, first)
        stale = bucket.update(key, "stale", first)
        bucket.put(key + ".tmp", b"bytes")
        bucket.delete(key + ".tmp")
        try:
            natsapp.Bucket("OTHER").get("x")
            denied = None
        except natsapp.Denied as e:
            denied = str(e)
        natsapp.publish("testkit.out.kv", {
            "first": first, "again": again, "value": entry.json(), "same_revision": entry.revision == first,
            "second_newer": second > first, "stale": stale, "gone": bucket.get(key + ".tmp") is None,
            "denied": denied,
        })
    else:
        raise natsapp.Reject(f"unknown op {op!r}")
