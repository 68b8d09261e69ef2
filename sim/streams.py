"""Stream drivers, monitors and rule checkers for Amaranth-simulator test benches.

Every valid/ready interface in the tests is driven through :func:`stream_put`
and :func:`stream_get`, with optional random stalls, so that each block is
exercised under back-pressure and bubbles the same way. (cocotb drivers for
the generated Verilog live beside them in :mod:`sim.cocotb`.)

:func:`checked_simulator` builds a simulator whose design has a checker on
every stream interface of every component inside it (the testbench's own
ports included): the test fails as soon as a producer breaks the
``amaranth.lib.stream`` rules, i.e. drops ``valid`` or changes the payload
of a transfer that ``ready`` has not yet taken.
"""

import random

from amaranth.hdl import Const, Fragment, Value
from amaranth.lib import stream, wiring
from amaranth.sim import Simulator


__all__ = ["stream_put", "stream_get", "StreamRuleError", "STREAM_RESTARTS", "design_streams",
           "stream_rule_checker", "checked_simulator"]

#: Streams whose pending offer a control input withdraws by design, as
#: ``(component class name, stream member) -> control(component)``; the rule of
#: such a stream is suspended in the cycle after the control was high. The
#: serial core's record reader runs a record ahead of the element issuer: when
#: the issuer finishes a group it goes idle (``busy`` low, which is the reader's
#: ``stop``) and never takes the next record's header, which the reader drops
#: when its next group starts.
STREAM_RESTARTS = {
    ("RecordReader", "headers"): lambda reader: reader.stop,
    ("ElementIssuer", "headers"): lambda issuer: ~issuer.busy,
}


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


class StreamRuleError(AssertionError):
    """A producer broke the stream rules: ``valid`` fell, or the payload changed,
    before ``ready`` took the transfer."""


def _component_streams(obj, signature, path):
    """Yield ``(path, stream.Interface)`` for each stream in ``signature`` of ``obj``."""
    for name, member in signature.members.items():
        if not member.is_signature:
            continue
        items = [(path + (name,), getattr(obj, name))]
        for size in member.dimensions:
            items = [(p + (i,), value[i]) for p, value in items for i in range(size)]
        inner = member.signature
        if isinstance(inner, wiring.FlippedSignature):
            inner = inner.flip()
        for item_path, value in items:
            if isinstance(inner, stream.Signature):
                yield item_path, value
            else:
                yield from _component_streams(value, inner, item_path)


def _path_name(path):
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)[1:]


def design_streams(design, restarts=STREAM_RESTARTS):
    """Elaborate ``design``; returns ``(fragment, [(name, stream.Interface, restart), ...])``.

    Every stream member of every ``wiring.Component`` in the hierarchy is
    listed once (a stream whose ``ready`` is constant 1 has no rule to break
    and is left out), named by its place in the hierarchy, e.g.
    ``"top.decoder0.rows"``, with its restart control of ``restarts`` (see
    :data:`STREAM_RESTARTS`) or ``None``. Simulate the returned fragment, not
    ``design``: elaborating again would build new components.
    """
    fragment = Fragment.get(design, platform=None)
    found, seen = [], set()

    def walk(fragment, path):
        for origin in fragment.origins or ():
            signature = getattr(origin, "signature", None)
            if not isinstance(origin, wiring.Component) or not isinstance(signature,
                                                                           wiring.Signature):
                continue
            for member_path, interface in _component_streams(origin, signature, ()):
                ready = Value.cast(interface.ready)
                if isinstance(ready, Const) or id(interface) in seen:
                    continue
                seen.add(id(interface))
                restart = restarts.get((type(origin).__name__, member_path[0]))
                found.append((_path_name(path + member_path), interface,
                              restart(origin) if restart else None))
        for index, (subfragment, name, _) in enumerate(fragment.subfragments):
            walk(subfragment, path + (name if name is not None else f"U${index}",))

    walk(fragment, ("top",))
    return fragment, found


def stream_rule_checker(streams):
    """A background testbench that fails the simulation on a broken stream rule.

    ``streams`` is a list of ``(name, stream.Interface, restart)``. In every
    cycle in which a stream's ``valid`` was high and its ``ready`` low, the next
    cycle must have ``valid`` high and the same payload, unless ``restart`` (a
    value, or ``None``) was high; otherwise :class:`StreamRuleError` names the
    stream, the cycle and what changed.
    """
    signals, checked = [], []
    for name, interface, restart in streams:
        slots = []
        restart = 0 if restart is None else restart
        for value in (interface.valid, interface.ready, interface.payload, restart):
            value = Value.cast(value)
            if isinstance(value, Const):
                slots.append(value.value)       # an int: the constant itself
            else:
                slots.append((len(signals),))   # a tuple: where the sample is
                signals.append(value)
        checked.append((name, *slots))

    def pick(values, slot):
        return values[slot[0]] if isinstance(slot, tuple) else slot

    async def checker(ctx):
        held = [None] * len(checked)    # the payload of a transfer ready has not taken
        restarted = [0] * len(checked)  # the stream's restart control was high
        cycle = 0
        async for _, _, *values in ctx.tick().sample(*signals):
            for index, (name, valid, ready, payload, restart) in enumerate(checked):
                valid, ready = pick(values, valid), pick(values, ready)
                payload = pick(values, payload)
                if held[index] is not None and not restarted[index]:
                    if not valid:
                        raise StreamRuleError(
                            f"stream {name}: valid fell in cycle {cycle} before ready took "
                            f"the payload {held[index]:#x}")
                    if payload != held[index]:
                        raise StreamRuleError(
                            f"stream {name}: payload changed from {held[index]:#x} to "
                            f"{payload:#x} in cycle {cycle} before ready took it")
                held[index] = payload if valid and not ready else None
                restarted[index] = pick(values, restart)
            cycle += 1
    return checker


def checked_simulator(design):
    """An Amaranth :class:`~amaranth.sim.Simulator` of ``design`` with
    :func:`stream_rule_checker` on every stream of :func:`design_streams`,
    running in the background. Add clocks and testbenches as usual."""
    fragment, streams = design_streams(design)
    simulator = Simulator(fragment)
    if streams:
        simulator.add_testbench(stream_rule_checker(streams), background=True)
    return simulator
