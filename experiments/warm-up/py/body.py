"""What `run` does with a message: parse its JSON, answer a little JSON."""
import json


def answer(data: bytes) -> int:
    body = json.loads(data)
    return len(json.dumps({"seen": body, "n": len(body)}))
