"""The benchmark's no-op handler: returns, so the runtime acks."""


def handle(data, msg):
    pass
