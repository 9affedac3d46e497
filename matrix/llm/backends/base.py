"""The one interface every serving backend implements.

A backend starts (or points at) an OpenAI-compatible service and hands back a `Server`: its base
URL, the model name to put in requests, and a way to stop what we started. Agents never see which
backend is behind a URL; they reach every model through `matrix.llm.client.LLMClient`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar


class BackendError(RuntimeError):
    """A backend could not start or reach its service; the message names the step and the value."""


@dataclass
class Server:
    """A running OpenAI-compatible service.

    `base_url` ends in `/v1`. `stop()` stops only what this process started (by PID or by handle);
    for an external API it does nothing.
    """

    backend: str
    base_url: str
    model: str
    simulated: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    _stop: Any = None

    def stop(self) -> None:
        if self._stop is not None:
            stop, self._stop = self._stop, None
            stop()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Backend(abc.ABC):
    """A serving backend, chosen by one config key (`backend: sim | vllm-cpu | vllm | sglang | openai`)."""

    name: ClassVar[str]
    simulated: ClassVar[bool] = False

    @abc.abstractmethod
    def start(self, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> Server:
        """Start the service (or resolve the external one), wait until healthy, return it."""
