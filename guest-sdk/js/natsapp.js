// Write natsapp-wasm handlers in JavaScript.
//
// In handler.js:
//
//   import { Reject, publish } from "./natsapp.js";
//
//   export function handle(data, msg) {        // data: JSON value, text or Uint8Array
//     if (!data.order_id) throw new Reject("an order needs an id");   // term (+ dead letter)
//     publish("order.status", { order_id: data.order_id, status: "processed" });
//   }                                          // returning acks; throw new Retry(…) retries;
//                                              // an uncaught throw is a crash (redelivered, cause panic)
//
// Runtime calls (publish, request, msg.ack(), …) are synchronous; `fetch`
// (outbound HTTP, to the origins service.toml grants) is the standard async
// one: write `export async function handle` and await it.
// Build: ./build.sh (componentize-js 0.23; `natsapp-wasm new --lang js` sets it up).

import * as publisher from "natsapp:handler/publisher@0.1.3";
import * as keyvalue from "natsapp:handler/keyvalue@0.1.3";
import * as store from "wasi:config/store@0.2.0-rc.1";

/** Throw to end the message for good: term, and a dead-letter copy when configured. */
export class Reject extends Error {
  constructor(reason) {
    super(String(reason));
    this.name = "Reject";
    this.reason = String(reason);
  }
}

/** Throw to have the message delivered again, after `delayMs` or the configured backoff. */
export class Retry extends Error {
  constructor(reason = "retry", { delayMs } = {}) {
    super(String(reason));
    this.name = "Retry";
    this.reason = String(reason);
    this.delayMs = delayMs;
  }
}

/** A runtime call failed; `kind` is denied, timeout, unavailable, invalid or other. */
export class HostError extends Error {
  constructor(kind, message) {
    super(message === undefined ? kind : `${kind}: ${message}`);
    this.name = "HostError";
    this.kind = kind;
  }
}

function call(fn) {
  try {
    return fn();
  } catch (e) {
    const p = e && e.payload;
    if (p && typeof p.tag === "string") throw new HostError(p.tag, p.val);
    throw e;
  }
}

const toJson = (value) => JSON.stringify(value, (_, v) => (typeof v === "bigint" ? Number(v) : v));

/**
 * A Uint8Array of this realm over the same bytes: the payload the host
 * passes in is one by its tag but not by `instanceof Uint8Array`.
 */
const asBytes = (view) => new Uint8Array(view.buffer, view.byteOffset, view.byteLength);

/** Bytes as they are, text as UTF-8, anything else as JSON. */
export function encode(data) {
  if (ArrayBuffer.isView(data)) return asBytes(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (typeof data === "string") return new TextEncoder().encode(data);
  return new TextEncoder().encode(toJson(data));
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
/** What a JSON document can start with. */
const jsonStart = new Set('{["-0123456789tfn \t\n\r');

/** The default parser: UTF-8 → JSON → text → bytes. */
export function parse(bytes) {
  let text;
  try {
    text = utf8.decode(bytes);
  } catch {
    return asBytes(bytes);
  }
  // Text that cannot be JSON skips the failed parse: throwing and catching
  // its error costs more than the rest of a handler call.
  if (!jsonStart.has(text.charAt(0))) return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

const pairs = (headers) => Object.entries(headers ?? {}).map(([k, v]) => [String(k), String(v)]);

/**
 * Publishes `data` (see `encode`); returns the PubAck ({stream, sequence, duplicate}) for a stream subject, else null.
 * With `outputs.mode = "atomic"` it returns null: the output is held and stored with the others after `handle`
 * returns, or not at all.
 */
export function publish(subject, data, headers, { delayMs, ttlMs } = {}) {
  const list = Array.isArray(headers) ? [...headers] : pairs(headers);
  // Stored after a delay, or kept for a time: the stream must allow schedules
  // (and, for a delay, capture natsapp.delayed.>) or TTLs.
  if (delayMs !== undefined) list.push(["Natsapp-Delay", `${Math.round(delayMs)}ms`]);
  if (ttlMs !== undefined) list.push(["Nats-TTL", `${Math.round(ttlMs)}ms`]);
  const ack = call(() => publisher.publish(subject, encode(data), list));
  return ack ? { stream: ack.stream, sequence: Number(ack.sequence), duplicate: ack.duplicate } : null;
}

/** Sends a request and returns the reply: {data, headers, text(), json()}. */
export function request(subject, data, { timeoutMs = 5000, headers } = {}) {
  const reply = call(() => publisher.request(subject, encode(data), pairs(headers), timeoutMs));
  return {
    data: reply.data,
    headers: reply.headers,
    text: () => new TextDecoder().decode(reply.data),
    json: () => JSON.parse(new TextDecoder().decode(reply.data)),
  };
}

const revisionOrNull = (r) => (r === undefined || r === null ? null : Number(r));

/**
 * A key-value bucket (JetStream KV) granted in service.toml:
 * `kv = { PAYMENTS = "rw" }`. Values are written as `encode` writes them.
 *
 *   const payments = new Bucket("PAYMENTS");
 *   if (payments.create(`charged.${id}`, { at: Date.now() }) === null) return;  // done before
 */
export class Bucket {
  constructor(name) {
    this.name = String(name);
  }
  /** {value: Uint8Array, revision, text(), json()}, or null when the key has no value. */
  get(key) {
    const e = call(() => keyvalue.get(this.name, key));
    if (!e) return null;
    const value = asBytes(e.value);
    return {
      value,
      revision: Number(e.revision),
      text: () => new TextDecoder().decode(value),
      json: () => JSON.parse(new TextDecoder().decode(value)),
    };
  }
  /** Stores `value` whatever was there; returns its revision. */
  put(key, value) {
    return Number(call(() => keyvalue.put(this.name, key, encode(value))));
  }
  /** Stores `value` only if the key has none; null when it has one (nothing written). */
  create(key, value) {
    return revisionOrNull(call(() => keyvalue.create(this.name, key, encode(value))));
  }
  /** Stores `value` only if the key's revision is still `revision`; null when it is not. */
  update(key, value, revision) {
    return revisionOrNull(call(() => keyvalue.update(this.name, key, encode(value), BigInt(revision))));
  }
  /** Deletes the key's value. */
  delete(key) {
    call(() => keyvalue.delete(this.name, key));
  }
}

/** Every `config = { … }` value of the subscriber, as an object. */
export function configAll() {
  try {
    return Object.fromEntries(store.getAll());
  } catch {
    return {};
  }
}

/** The subscriber's `config = { … }` value for `key`. */
export function config(key, fallback) {
  try {
    return store.get(key) ?? fallback;
  } catch {
    return fallback;
  }
}

/** The delivery being handled; valid during `handle` only. */
export class Message {
  constructor(raw, data) {
    this.raw = raw;
    this.payload = data;
  }
  /** The payload as received (a Uint8Array), whatever the parser made of it. */
  get data() {
    return this.payload === undefined ? new Uint8Array() : asBytes(this.payload);
  }
  get subject() {
    return this.raw.subject();
  }
  /** Where the publisher wants an answer: a request's reply subject (an
   * endpoint's message), else its Reply-To header. */
  get reply() {
    return this.raw.reply();
  }
  /** Answers the message on its reply address, once; `data` as `publish` encodes it. */
  respond(data, headers) {
    const list = Array.isArray(headers) ? [...headers] : pairs(headers);
    call(() => this.raw.respond(encode(data), list));
  }
  /** [name, value] pairs; a name may repeat. */
  get headers() {
    return this.raw.headers();
  }
  header(name) {
    const found = this.raw.headers().find(([n]) => n === name);
    return found ? found[1] : undefined;
  }
  /** {stream, consumer, streamSequence, consumerSequence, delivered, pending, publishedUnixNs} as numbers. */
  get delivery() {
    const d = this.raw.delivery();
    return Object.fromEntries(Object.entries(d).map(([k, v]) => [k, typeof v === "bigint" ? Number(v) : v]));
  }
  /** With `watch = { kv: … }`: the key whose change this is (undefined for a
   * message of any other stream). A bucket is the stream `KV_<bucket>` whose
   * subjects are `$KV.<bucket>.<key>`. */
  get kvKey() {
    const stream = this.raw.delivery().stream;
    if (!stream.startsWith("KV_")) return undefined;
    const prefix = `$KV.${stream.slice(3)}.`;
    const subject = this.raw.subject();
    return subject.startsWith(prefix) ? subject.slice(prefix.length) : undefined;
  }
  /** With `watch`: "put", "delete" or "purge" (undefined for a message of any other stream). */
  get kvOperation() {
    if (this.kvKey === undefined) return undefined;
    return { DEL: "delete", PURGE: "purge" }[this.header("KV-Operation")] ?? "put";
  }
  /** With `watch`: the change's revision, what `Bucket.update` compares (undefined for a message of any other stream). */
  get kvRevision() {
    if (this.kvKey === undefined) return undefined;
    return Number(this.raw.delivery().streamSequence);
  }
  /** Acknowledge now; with `outputs.mode = "atomic"` after the outputs' commit, and only if `handle` returns. */
  ack() {
    call(() => this.raw.ack());
  }
  nak(delayMs) {
    call(() => this.raw.nak(delayMs === undefined ? undefined : BigInt(delayMs)));
  }
  term(reason) {
    call(() => this.raw.term(reason));
  }
  inProgress() {
    call(() => this.raw.inProgress());
  }
}

/** The parser of handler.js's `messageParser(bytes)` export, when it has
 * one (as the Python wrapper's `message_parser`): when it throws, the
 * failure is logged and the default parser takes over. */
function parserOf(messageParser) {
  if (typeof messageParser !== "function") return parse;
  return (bytes) => {
    try {
      return messageParser(asBytes(bytes));
    } catch (e) {
      console.error(`messageParser failed (${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}); using the default parser`);
      return parse(bytes);
    }
  };
}

/** A JSON document like those most handlers parse, for the warm-up's parser run. */
const WARM_PAYLOAD = new TextEncoder().encode('{"id": 1, "name": "warm-up", "items": [1.5, true, null]}');

/**
 * The `warm-up` export (WIT 0.1.3): run once on an instance made ahead of
 * need, before its message. It takes the SDK's own path on a message without
 * content (wrapping it, reading its subject, the default parser), then the
 * handler's `warmUp()` when handler.js exports one. It must not publish or
 * answer; an exception is logged as in `handle` and drops the instance.
 */
export function adaptWarmUp(hook) {
  const fail = (e) => {
    logUncaught(e);
    throw e;
  };
  return (msg) => {
    let result;
    try {
      new Message(msg, new Uint8Array()).subject;
      parse(WARM_PAYLOAD);
      if (hook !== undefined) result = hook();
    } catch (e) {
      fail(e);
    }
    // An `async function warmUp` is finished before the warm-up returns.
    if (result && typeof result.then === "function") return result.then(() => undefined, fail);
  };
}

/** The stack and the line the runtime reads an uncaught exception's cause from. */
function logUncaught(e) {
  console.error(e && e.stack ? `${e}\n${e.stack}` : String(e));
  console.error(`uncaught exception: ${e instanceof Error ? `${e.name}: ${e.message}` : `thrown ${typeof e}: ${String(e)}`}`);
}

/** Adapts `handle(data, msg)` to the WIT export; used by main.js. An async
 * `handle` (one that awaits `fetch`) is awaited: the component runs its event
 * loop until the promise settles. */
export function adapt(handle, messageParser) {
  const parseData = parserOf(messageParser);
  const fail = (e) => {
    if (e instanceof Reject) throw { tag: "reject", val: e.reason };
    if (e instanceof Retry) {
      const delayMs = e.delayMs === undefined ? undefined : BigInt(Math.round(e.delayMs));
      throw { tag: "retry", val: { delayMs, reason: e.reason } };
    }
    if (e instanceof HostError && (e.kind === "denied" || e.kind === "invalid")) {
      throw { tag: "reject", val: e.message };
    }
    // Uncaught: the stack and the line the runtime reads the cause from, then
    // thrown on, which ends the call as a Rust panic does (a failure with
    // cause `panic`, redelivered with backoff, the instance not reused).
    logUncaught(e);
    throw e;
  };
  return (data, msg) => {
    let result;
    try {
      result = handle(parseData(data), new Message(msg, data));
    } catch (e) {
      fail(e);
    }
    if (result && typeof result.then === "function") return result.then(() => undefined, fail);
  };
}
