"""Python baselines for benches/throughput.rs: the stack natsapp-wasm replaces.

    python py_consumers.py {nats-py|nats-py-fetch1|faststream} URL STREAM SUBJECT DURABLE N

Consumes N messages from a durable pull consumer, acking each, with
nats-py fetch(100), nats-py fetch(1) (the Python wrapper's default batch),
or FastStream PullSub(batch_size=100) (logging off),
then exits. The benchmark times the consumer from the server's side, the
same way as every other case.
"""

import asyncio
import sys


async def nats_py(url, stream, subject, durable, n, batch=100):
    import nats
    from nats.errors import TimeoutError as FetchTimeout

    nc = await nats.connect(url)
    sub = await nc.jetstream().pull_subscribe(subject, durable=durable, stream=stream)
    count = 0
    while count < n:
        try:
            msgs = await sub.fetch(batch, timeout=5)
        except FetchTimeout:
            continue
        for m in msgs:
            await m.ack()
            count += 1
    await nc.flush()
    await nc.close()


async def faststream(url, stream, subject, durable, n):
    from faststream.nats import JStream, NatsBroker, PullSub

    broker = NatsBroker(url, logger=None)
    done = asyncio.Event()
    seen = [0]

    @broker.subscriber(subject, stream=JStream(stream, declare=False), durable=durable, pull_sub=PullSub(batch_size=100))
    async def handle(body: bytes):
        seen[0] += 1
        if seen[0] >= n:
            done.set()

    async with broker:
        await broker.start()
        await done.wait()
        await asyncio.sleep(0.5)  # let the last acks leave


if __name__ == "__main__":
    kind, url, stream, subject, durable, n = sys.argv[1:7]
    run = {
        "nats-py": nats_py,
        "nats-py-fetch1": lambda *a: nats_py(*a, batch=1),
        "faststream": faststream,
    }[kind]
    asyncio.run(run(url, stream, subject, durable, int(n)))
