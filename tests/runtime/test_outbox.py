"""The scheduler thread's hand-off to the event loop: nothing lost, nothing reordered, one wake-up per pile."""

from __future__ import annotations

import asyncio
import threading

from sdc_runtime.engine import Outbox


async def drain(box: Outbox) -> list[str | BaseException | None]:
    got: list[str | BaseException | None] = []
    while not got or got[-1] is not None:
        got += await box.take()
    return got


def test_items_put_before_the_reader_looks_arrive_together() -> None:
    async def scenario() -> list[list[str | BaseException | None]]:
        box = Outbox(asyncio.get_running_loop())

        def write() -> None:
            for item in ("a", "b", "c"):
                box.put(item)

        writer = threading.Thread(target=write)
        writer.start()
        writer.join()
        first = await box.take()
        box.put(None)
        return [first, await box.take()]

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == [["a", "b", "c"], [None]]


def test_a_racing_writer_loses_no_item_and_no_wake_up() -> None:
    # The writer never waits for the reader, so puts land before, during and after each take():
    # a lost wake-up would hang the reader (the timeout fails the test), a lost item shows in the sum.
    count = 20_000

    async def scenario() -> list[str | BaseException | None]:
        box = Outbox(asyncio.get_running_loop())

        def write() -> None:
            for i in range(count):
                box.put(str(i))
            box.put(None)

        writer = threading.Thread(target=write)
        writer.start()
        got = await drain(box)
        writer.join()
        return got

    got = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert got == [*(str(i) for i in range(count)), None]
