"""`warm` takes only part of the message's path: the parse, not the answer."""
import json

import body
import wit_world


class WitWorld(wit_world.WitWorld):
    def warm(self) -> None:
        json.loads(b'{"a": [1]}')

    def run(self, data: bytes) -> int:
        return body.answer(data)
