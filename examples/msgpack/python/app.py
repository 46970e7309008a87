"""Orders in MessagePack, parsed by the Python wrapper's own msgpack parser.

`message_parser` gets the payload's bytes; what it returns is `data`. When it
raises (a JSON order, say), the failure is logged and the default parser
(UTF-8 → JSON → text → bytes) takes over, as in the wrapper.
"""

import msgpack
import natsapp


def message_parser(message_bytes: bytes):
    return msgpack.unpackb(message_bytes, raw=False)


def handle(data, msg):
    natsapp.publish("orders.summary", {
        "order_id": data["order_id"],
        "items": len(data["items"]),
        "payload_bytes": len(msg.data),
    })
