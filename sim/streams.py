"""Stream drivers and monitors for Amaranth-simulator test benches.

Every valid/ready interface in the tests is driven through these two
functions, with optional random stalls, so that each block is exercised
under back-pressure and bubbles the same way. (cocotb drivers for the
generated Verilog live beside them in :mod:`sim.cocotb`.)
"""

import random


__all__ = ["stream_put", "stream_get"]


async def stream_put(ctx, stream, payloads, *, stall=0.0, rng=None):
    """Send ``payloads`` on ``stream`` (the sink's port), one per accepted cycle.

    With ``stall`` > 0, ``valid`` is withheld for a random fraction of cycles.
    Payloads are anything ``ctx.set`` accepts for the payload (an int or a
    dict for a data layout).
    """
    rng = rng or random.Random(0)
    for payload in payloads:
        while stall and rng.random() < stall:
            ctx.set(stream.valid, 0)
            await ctx.tick()
        ctx.set(stream.valid, 1)
        ctx.set(stream.payload, payload)
        await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, count, *, stall=0.0, rng=None, convert=None):
    """Receive ``count`` payloads from ``stream`` (the source's port).

    With ``stall`` > 0, ``ready`` is withheld for a random fraction of cycles.
    ``convert`` maps each raw payload (as ``ctx.get`` returns it) to a value.
    """
    rng = rng or random.Random(1)
    received = []
    while len(received) < count:
        ready = not (stall and rng.random() < stall)
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if ready and valid:
            received.append(convert(payload) if convert else payload)
    ctx.set(stream.ready, 0)
    return received
