// The Python wrapper's "Real-World Example", ported: validates an order,
// reserves inventory for each item and publishes the order's status.
// Invalid orders are rejected (terminated, dead-lettered when configured);
// a failed publish throws and is retried.

import { Reject, config, publish } from "./natsapp.js";

const FIELDS = { order_id: "string", user_id: "string", total_amount: "number", items: "array" };

function validate(data) {
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new Reject(`invalid JSON payload: expected an object, got ${typeof data}`);
  }
  for (const [name, kind] of Object.entries(FIELDS)) {
    if (!(name in data)) throw new Reject(`invalid JSON payload: missing field \`${name}\``);
    const ok = kind === "array" ? Array.isArray(data[name]) : typeof data[name] === kind;
    if (!ok) throw new Reject(`invalid JSON payload: \`${name}\` has the wrong type`);
  }
  const unknown = Object.keys(data).filter((k) => !(k in FIELDS)).sort();
  if (unknown.length) throw new Reject(`invalid JSON payload: unknown field \`${unknown[0]}\``);
  if (!data.order_id || data.items.length === 0 || data.total_amount < 0) {
    throw new Reject(`invalid order "${data.order_id}": needs an id, items and a non-negative total`);
  }
  return data;
}

export function handle(data, msg) {
  const order = validate(data);
  console.log(`processing order ${order.order_id} for user ${order.user_id}`);
  const inventory = config("inventory_subject", "inventory.updates");
  for (const item of order.items) {
    publish(inventory, { item_id: item.id, quantity_reserved: item.quantity });
  }
  const now = new Date();
  const iso = now.toISOString();
  publish(config("status_subject", "order.status"), {
    order_id: order.order_id,
    status: "processed",
    processed_at: iso.slice(0, 19) + "Z",
    tracking_number: `TRK${order.order_id}${iso.slice(0, 10).replaceAll("-", "")}`,
  });
  console.log(`processed order ${order.order_id}`);
}
