"""Serving measured alone: the turn-taking rules of the sweep's gate (plain asyncio, no Ray)."""
import asyncio

from orchestrator.engine.gate import Turns


async def _scenario():
    t = Turns()
    log = []
    assert await t.acquire("node", "A", exclusive=False)  # A trains
    assert await t.acquire("node", "B", exclusive=False)  # B trains beside it

    async def serve_b():
        await t.release("node", "B", False)
        assert await t.acquire("node", "B", exclusive=True)  # waits for A's phase to end
        log.append("B serves")
        await asyncio.sleep(0.01)
        log.append("B done")
        await t.release("node", "B", True)

    async def a_phases():
        await asyncio.sleep(0.01)
        log.append("A ends train")
        await t.release("node", "A", False)
        assert await t.acquire("node", "A", exclusive=False)  # its next phase waits while B serves
        log.append("A evaluates")
        await t.release("node", "A", False)

    await asyncio.gather(serve_b(), a_phases())
    return log


def test_a_serve_waits_for_other_trials_phases_and_holds_new_ones_back():
    assert asyncio.run(_scenario()) == ["A ends train", "B serves", "B done", "A evaluates"]


async def _ranks():
    t = Turns()
    assert await t.acquire("node", "T", exclusive=False)  # rank 0 of T in a phase
    assert await t.acquire("node", "U", exclusive=False)
    waiting = asyncio.ensure_future(t.acquire("node", "U", exclusive=True))  # U asks to serve
    await asyncio.sleep(0.01)
    # T's rank 1 joins a phase while U waits: T already holds the gate, so it may (no deadlock in a collective)
    assert await asyncio.wait_for(t.acquire("node", "T", exclusive=False), 1)
    assert not await t.acquire("node", "V", exclusive=False, timeout=0.05)  # a newcomer waits behind U
    await t.release("node", "U", False)
    await t.release("node", "T", False)
    await t.release("node", "T", False)
    assert await asyncio.wait_for(waiting, 1)
    assert await t.acquire("node", "U", exclusive=True)  # U's second rank shares U's turn
    assert not await t.acquire("node", "V", exclusive=False, timeout=0.05)
    await t.forget("U")  # U ended (or died): nothing it held stays held
    return await t.acquire("node", "V", exclusive=False, timeout=1)


def test_ranks_of_one_trial_share_its_turn_and_a_forgotten_trial_frees_the_gate():
    assert asyncio.run(_ranks())


async def _keys_and_timeout():
    t = Turns()
    assert await t.acquire("gpu-0", "A", exclusive=False)
    assert await t.acquire("gpu-1", "B", exclusive=True)  # another device: no wait
    return await t.acquire("gpu-0", "B", exclusive=True, timeout=0.05)  # A holds gpu-0 past the limit


def test_devices_take_turns_apart_and_a_wait_is_bounded():
    assert asyncio.run(_keys_and_timeout()) is False
