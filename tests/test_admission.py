"""Admission's replay rules: a loss reported by a stale copy of a task changes nothing."""

from __future__ import annotations

import asyncio

from matrix.admission import Admission
from matrix.message import Message
from matrix.sources import read_rows


def test_a_loss_reported_by_an_attempt_that_was_already_replayed_is_stale() -> None:
    async def main() -> None:
        sent: list[Message] = []
        errors: list[Message] = []

        async def send(m: Message) -> None:
            sent.append(m)

        async def emit_error(m: Message) -> None:
            errors.append(m)

        adm = Admission(
            read_rows([{"id": "t"}], id_field="id"),
            workflow="w",
            send=send,
            emit_error=emit_error,
            max_concurrent_tasks=4,
            max_attempts=3,
        )
        run = asyncio.create_task(adm.run())
        while not sent:
            await asyncio.sleep(0.01)
        key = ("t", 0)
        assert sent[-1].attempt == 1
        assert await adm.replay(key, "actor died")  # a census: attempt 1 is lost, attempt 2 starts
        assert sent[-1].attempt == 2
        # attempt 1's copy was alive after all, and now reports that it lost a payload: stale
        assert not await adm.replay(key, "payload lost", attempt=1)
        assert adm.stats.stale_losses == 1 and adm.leases[key].attempt == 2 and len(sent) == 2
        assert await adm.replay(key, "payload lost", attempt=2)  # the current attempt's loss counts
        assert sent[-1].attempt == 3
        assert not await adm.replay(key, "actor died")  # attempt 3 of 3: gives up with an error row
        assert adm.stats.gave_up == 1 and "gave up after max_attempts=3" in (errors[0].error or "")
        adm.credit(key)  # the error row reached the sink
        await asyncio.wait_for(run, 5)
        assert adm.snapshot()["stale_losses"] == 1 and adm.stats.replayed == 2

    asyncio.run(main())
