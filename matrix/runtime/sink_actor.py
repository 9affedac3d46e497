"""The Ray actor that writes one partition's finished rows and reports them back to admission.

Finished messages arrive in batches from the agents (`finish_batch`). The sink fetches their
payloads, keeps the first copy of each task, and pushes two reports to its partition's admission:
a credit at once (the task's admission slot is free again) and, once the row is flushed to disk, a
durable report (only then is the task's lease released, so a sink that dies loses no acknowledged
row). A restarted sink carries on in the same file, from the offset where this run's rows began.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import warnings
from typing import Any

import ray
from ray.exceptions import RayError

from matrix.admission import Key
from matrix.message import Message
from matrix.payload import PayloadLost, owners_of
from matrix.runtime.config import RunConfig
from matrix.runtime.directory import Sender, Watchable
from matrix.runtime.payload_owners import PayloadFrees, PayloadOwner, store_for
from matrix.runtime.report import write_json
from matrix.sink import SinkStats, SinkWriter


@ray.remote(num_cpus=0)
class SinkActor(Watchable, PayloadOwner):
    def __init__(self, cfg: RunConfig, partition: int, directory: str) -> None:
        cfg.import_modules()
        self.partition = partition
        self.writer = SinkWriter(cfg.output_path(partition), flush_every=cfg.flush_every)
        # Where this run's rows begin, for a restarted incarnation to carry on its predecessor's counts.
        start = cfg.output_path(partition).with_name(cfg.output_path(partition).name + ".offset")
        with warnings.catch_warnings():  # Ray 2.60 warns about its own use of a deprecated attribute here
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        if restarted and start.exists():
            self.writer.take_over(int(json.loads(start.read_text())["offset"]))
        else:
            write_json(start, {"offset": self.writer.size()})
        self.sender = Sender(directory, cfg.peer_policy, f"sink-{partition}")
        self.payload = store_for(self.sender, cfg)
        self.frees = PayloadFrees(self.sender)
        self.payload_lost = 0
        self.pending_durable: list[Key] = []
        self.receiving: set[Key] = set()  # keys of messages in finish_batch, until accepted or refused
        self._flusher: asyncio.Task[None] | None = None

    def done_keys(self) -> list[Key]:
        return list(self.writer.done)

    def ledger(self) -> dict[str, list[Key]]:
        """What a restarted admission rebuilds from, taken at one moment: every key with a row here
        (`done`), those of this run (`this_run`: a resumed run's earlier rows left out), and those
        accepted but not yet in the file (`unflushed`)."""
        w = self.writer
        return {
            "done": list(w.done),
            "this_run": list(w.this_run),
            "unflushed": [k for k in w.done if not w.written(k)],
        }

    def known(self, keys: list[Key]) -> list[tuple[Key, bool]]:
        """The keys that have a row here, or are being received (a census must not replay those), each
        with whether its row is in the file already."""
        return [(k, self.writer.written(k)) for k in keys if k in self.writer.done or k in self.receiving]

    async def finish(self, msg: Message) -> bool:
        return (await self.finish_batch([msg]))[0]

    async def finish_batch(self, msgs: list[Message]) -> list[bool]:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop())
        self.receiving.update(m.key for m in msgs)  # `known` counts them while their payloads are fetched
        await self.sender.load()
        owners = [owners_of(m) for m in msgs]  # before resolving: it replaces the handles that name them
        resolved = await asyncio.gather(*(self._resolve(m) for m in msgs))
        accepted = [ok and self.writer.accept(m) for m, ok in zip(msgs, resolved, strict=True)]
        self.receiving.difference_update(m.key for m in msgs)  # in writer.done now, or refused
        for m, names in zip(msgs, owners, strict=True):
            if m.key in self.writer.done:  # only a task with its row, only after its fetches (PayloadFrees)
                self.frees.add(m.key, names)
        # Credit every task that has its row now, a duplicate copy's too: a copy that arrives after its
        # task was replayed frees the replay's lease, which would otherwise wait for a row forever.
        credited = list(dict.fromkeys(m.key for m in msgs if m.key in self.writer.done))
        if credited:
            self.pending_durable.extend(credited)
            # Push the credits (one call per batch); each lease stays until its row is durable.
            self.sender.admissions[self.partition].credit_batch.remote(credited)
        if not self.writer.buffered:
            self._report_durable()
        return accepted

    async def _resolve(self, msg: Message) -> bool:
        """Fetch the message's payloads; a task whose payload is gone is replayed, not written."""
        try:
            await self.payload.resolve(msg)
            return True
        except (RayError, PayloadLost) as exc:
            if msg.key in self.writer.done:
                self.writer.stats.duplicates += 1
                return False
            self.payload_lost += 1
            adm = self.sender.admissions[self.partition]
            with contextlib.suppress(RayError):
                await adm.replay.remote(msg.key, f"payload lost at the sink: {type(exc).__name__}", msg.attempt)
            return False

    def _report_durable(self) -> None:
        if self.pending_durable:
            keys, self.pending_durable = self.pending_durable, []
            self.sender.admissions[self.partition].durable.remote(keys)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self.writer.flush()
            self._report_durable()
            self.frees.send()

    def counts(self) -> dict[str, Any]:
        st = self.writer.stats
        return {
            "finished": st.finished,
            "failed": st.failed,
            "completion_tokens": st.completion_tokens,
            "tokens_by_role": {role: u["completion_tokens"] for role, u in st.tokens_by_role.items()},
        }

    async def close(self) -> SinkStats:
        if self._flusher is not None:
            self._flusher.cancel()
        self.writer.close()
        self._report_durable()
        self.frees.send()
        await self.frees.wait()
        return self.writer.stats
