"""The Python wrapper's "Real-World Example", ported: validates an order,
reserves inventory for each item and publishes the order's status.
Invalid orders are rejected (terminated, dead-lettered when configured);
a failed publish raises and is retried."""

from datetime import datetime, timezone

import natsapp


def validate(data):
    if not isinstance(data, dict):
        raise natsapp.Reject(f"invalid JSON payload: expected an object, got {type(data).__name__}")
    fields = {"order_id": str, "user_id": str, "total_amount": (int, float), "items": list}
    for name, kind in fields.items():
        if name not in data:
            raise natsapp.Reject(f"invalid JSON payload: missing field `{name}`")
        if not isinstance(data[name], kind):
            raise natsapp.Reject(f"invalid JSON payload: `{name}` has the wrong type")
    unknown = set(data) - set(fields)
    if unknown:
        raise natsapp.Reject(f"invalid JSON payload: unknown field `{sorted(unknown)[0]}`")
    if not data["order_id"] or not data["items"] or data["total_amount"] < 0:
        raise natsapp.Reject(f"invalid order {data['order_id']!r}: needs an id, items and a non-negative total")
    return data


async def handle(data, msg):
    order = validate(data)
    print(f"processing order {order['order_id']} for user {order['user_id']}")
    inventory = natsapp.config("inventory_subject", "inventory.updates")
    for item in order["items"]:
        await natsapp.publish(inventory, {"item_id": item["id"], "quantity_reserved": item["quantity"]})
    now = datetime.now(timezone.utc)
    status = {
        "order_id": order["order_id"],
        "status": "processed",
        "processed_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tracking_number": f"TRK{order['order_id']}{now.strftime('%Y%m%d')}",
    }
    await natsapp.publish(natsapp.config("status_subject", "order.status"), status)
    print(f"processed order {order['order_id']}")
