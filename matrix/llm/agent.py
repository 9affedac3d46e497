"""A generic LLM role: one chat completion per step, through the process's shared client.

Case studies subclass it (or write their own `Agent`) to build prompts their way; the defaults
make a usable role from config alone: a system prompt, the task's input field as the first user
message, the conversation so far as alternating turns, the server's usage recorded on the turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from matrix.agent import Agent
from matrix.llm.client import LLMClient, message_text
from matrix.message import Message, Turn, Usage

_clients: dict[tuple[int, tuple[str, ...], str | None], LLMClient] = {}


def shared_client(urls: Sequence[str], *, model: str | None = None, **kwargs: Any) -> LLMClient:
    """One client per (event loop, endpoint set, model) in this process: pooled connections, one ledger."""
    key = (id(asyncio.get_running_loop()), tuple(urls), model)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = LLMClient(list(urls), model=model, **kwargs)
    return client


class LLMAgent(Agent):
    """Config: `urls` (base URLs), `model`, `sampling` (OpenAI fields), `system` (prompt),
    `input_field` (row field for the first user message), `max_concurrency` per replica."""

    async def setup(self) -> None:
        urls = self.config.get("urls")
        if not urls:
            raise ValueError(f"role {self.role!r}: LLMAgent needs config 'urls' (base URLs of the model servers)")
        self.llm = shared_client(
            urls, model=self.config.get("model"), max_concurrency=int(self.config.get("max_concurrency", 256))
        )

    async def build_messages(self, message: Message) -> list[dict[str, Any]]:
        chat: list[dict[str, Any]] = []
        if self.config.get("system"):
            chat.append({"role": "system", "content": self.config["system"]})
        row = await self.resolve(message.row)
        field = self.config.get("input_field", "prompt")
        chat.append({"role": "user", "content": str(row.get(field, "")) if isinstance(row, dict) else str(row)})
        for role, content in await self.history(message):
            chat.append({"role": "assistant" if role == self.role else "user", "content": str(content)})
        return chat

    async def step(self, message: Message) -> Message:
        reply = await self.llm.chat(
            await self.build_messages(message),
            role=self.role,
            sticky_key=message.task_id if self.sticky else None,
            **dict(self.config.get("sampling", {})),
        )
        usage = Usage()
        usage.add(reply.get("usage"))
        message.turns.append(Turn(self.role, message_text(reply), usage))
        return message

    async def close(self) -> None:
        for key, client in list(_clients.items()):
            if key[0] == id(asyncio.get_running_loop()):
                await client.close()
                _clients.pop(key, None)
