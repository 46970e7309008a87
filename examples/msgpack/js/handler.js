// Orders in MessagePack, parsed with @msgpack/msgpack (`npm install
// @msgpack/msgpack`; build.sh bundles it). `messageParser` gets the
// payload's bytes; what it returns is `data`. When it throws (a JSON order,
// say), the failure is logged and the default parser (UTF-8 → JSON → text →
// bytes) takes over.
import { decode } from "@msgpack/msgpack";
import { publish } from "./natsapp.js";

export function messageParser(bytes) {
  return decode(bytes);
}

export function handle(data, msg) {
  publish("orders.summary", {
    order_id: data.order_id,
    items: data.items.length,
    payload_bytes: msg.data.length,
  });
}
