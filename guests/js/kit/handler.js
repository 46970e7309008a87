// Test handler for the JavaScript SDK: the JSON payload's "op" says what to
// do. Results the tests check are published to testkit.out.<op>.

import { Bucket, HostError, Reject, Retry, config, publish } from "./natsapp.js";

// Warm-ups this instance had (the runtime runs one on instances made ahead).
let warmed = 0;

export function warmUp() {
  if (config("warm_up") === "raise") throw new Error("warm-up refused");
  warmed += 1;
}

export function handle(data, msg) {
  if (msg.kvKey !== undefined) {
    // A watched bucket's change: reported, then its value run as an op.
    publish("testkit.out.kvchange", { key: msg.kvKey, operation: msg.kvOperation, revision: msg.kvRevision });
    if (msg.data.length === 0) return;
  }
  if (data === null || typeof data !== "object" || Array.isArray(data) || data instanceof Uint8Array) {
    // What the default parser made of a payload that is not an op.
    const bytes = data instanceof Uint8Array;
    const type = bytes ? "bytes" : Array.isArray(data) ? "array" : data === null ? "null" : typeof data;
    publish("testkit.out.parsed", { type, value: bytes ? Array.from(data) : data });
    return;
  }
  switch (data.op) {
    case "raise":
      throw new TypeError(data.message);
    case "reject":
      throw new Reject(data.reason);
    case "retry":
      throw new Retry("asked to retry", { delayMs: data.delay_ms });
    case "warmed":
      publish("testkit.out.warmed", { warmed });
      return;
    case "respond":
      msg.respond(data.data, { "X-Answered-By": "js" });
      return;
    case "publish": {
      const ack = publish(data.subject, data.data);
      publish("testkit.out.publish", ack);
      return;
    }
    case "later": {
      try {
        const ack = publish(data.subject, data.data, [], { delayMs: data.delay_ms, ttlMs: data.ttl_ms });
        publish("testkit.out.later", { stream: ack.stream });
      } catch (e) {
        if (!(e instanceof HostError)) throw e;
        publish("testkit.out.later", { error: e.message });
      }
      return;
    }
    case "ack":
      msg.ack();
      throw new Error("failing after my own ack");
    case "info": {
      const d = msg.delivery;
      publish("testkit.out.info", {
        subject: msg.subject, trace: msg.header("X-Trace"), delivered: d.delivered,
        stream: d.stream, region: config("region"), data,
      });
      return;
    }
    case "encodings":
      for (const value of [new Uint8Array([0, 114, 97, 119]), "text", [1, 2], { a: 1 }, { big: 7n }, null]) {
        publish("testkit.out.enc", value);
      }
      return;
    case "term":
      msg.term("not for us");
      return;
    case "denied":
      publish(data.subject, "x");
      return;
    case "http":
      return (async () => {
        try {
          const resp = await fetch(data.url, {
            method: data.method,
            headers: { "x-echo": "from javascript" },
            body: data.body === null || data.body === undefined ? undefined : JSON.stringify(data.body),
          });
          publish("testkit.out.http", { status: resp.status, body: await resp.text(), echo: resp.headers.get("x-echo") });
        } catch (e) {
          publish("testkit.out.http", { error: String(e && e.message), kind: "error" });
        }
      })();
    case "kv": {
      const bucket = new Bucket(data.bucket);
      const key = data.key;
      const first = bucket.create(key, { n: 1 });
      const again = bucket.create(key, "again");
      const entry = bucket.get(key);
      const second = bucket.update(key, { n: 2 }, first);
      const stale = bucket.update(key, "stale", first);
      bucket.put(`${key}.tmp`, new Uint8Array([1, 2]));
      bucket.delete(`${key}.tmp`);
      let denied = null;
      try {
        new Bucket("OTHER").get("x");
      } catch (e) {
        if (!(e instanceof HostError) || e.kind !== "denied") throw e;
        denied = e.message;
      }
      publish("testkit.out.kv", {
        first, again, value: entry.json(), same_revision: entry.revision === first,
        second_newer: second > first, stale, gone: bucket.get(`${key}.tmp`) === null, denied,
      });
      return;
    }
    default:
      throw new Reject(`unknown op ${JSON.stringify(data.op)}`);
  }
}
