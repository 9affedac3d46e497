"""Behaviour models: what the simulated engine says, as opposed to when it says it.

A behaviour model turns one request into one reply (text or tool calls) and its completion token
count. It sees only what a real model would see, the request body, plus whatever dataset it was
configured with, and a seed; the same (request, seed) always gives the same reply, so simulated
runs are reproducible. Timing is not its business: the engine core decides when each token leaves.

`generic` writes readable filler whose length follows a log-normal distribution. Case studies
register their own (`register_behaviour("coral", factory)`), e.g. grounded in real model answers
and lengths. `apply_limits` enforces `max_tokens`, `stop` and `ignore_eos` on any model's reply,
so a behaviour cannot break the API's contract.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from matrix.llm.sim.tokens import count_text_tokens, token_pieces


@dataclass(frozen=True)
class Reply:
    """A model reply: text and/or tool calls, its completion tokens and why it ended.

    `reasoning_content` is the reasoning a reasoning model returns beside its answer (vLLM's field
    for gpt-oss and similar); its tokens are part of `completion_tokens`.
    """

    content: str | None
    completion_tokens: int
    finish_reason: str = "stop"
    tool_calls: tuple[dict[str, Any], ...] = ()
    reasoning_content: str | None = None

    def __post_init__(self) -> None:
        if self.completion_tokens < 1:
            raise ValueError(f"a reply has at least one completion token, got {self.completion_tokens}")
        if self.finish_reason not in ("stop", "length", "tool_calls"):
            raise ValueError(f"finish_reason must be stop, length or tool_calls, got {self.finish_reason!r}")


@runtime_checkable
class BehaviourModel(Protocol):
    """Turns a request body (chat or completions) into a reply, deterministically given `seed`."""

    name: str

    def reply(self, request: Mapping[str, Any], *, seed: int) -> Reply: ...


class UnknownBehaviourError(ValueError):
    """The behaviour name is not registered; the message lists the registered ones."""


BehaviourFactory = Callable[..., BehaviourModel]
_REGISTRY: dict[str, BehaviourFactory] = {}


def register_behaviour(name: str, factory: BehaviourFactory, *, replace: bool = False) -> None:
    """Make `get_behaviour(name, **config)` call `factory(**config)`."""
    if name in _REGISTRY and not replace and _REGISTRY[name] is not factory:
        raise ValueError(f"behaviour {name!r} is already registered; pass replace=True to override it")
    _REGISTRY[name] = factory


def list_behaviours() -> list[str]:
    return sorted(_REGISTRY)


def get_behaviour(name: str, **config: Any) -> BehaviourModel:
    """A behaviour model by registered name, or by import path `package.module:factory`.

    The import path lets a server process load a case study's behaviour that registered nothing
    in that process yet.
    """
    factory = _REGISTRY.get(name)
    if factory is None and ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise UnknownBehaviourError(f"cannot import behaviour {name!r}: {exc}") from None
    if factory is None:
        raise UnknownBehaviourError(
            f"unknown behaviour {name!r}: choose one of {', '.join(list_behaviours())} "
            "or give an import path 'package.module:factory'"
        )
    try:
        model = factory(**config)
    except TypeError as exc:
        raise ValueError(f"behaviour {name!r} rejected its configuration {config!r}: {exc}") from None
    if not isinstance(model, BehaviourModel):
        raise TypeError(f"behaviour factory {name!r} returned {type(model).__name__}, not a BehaviourModel")
    return model


def request_digest(request: Mapping[str, Any], seed: int) -> int:
    """A stable 64-bit number from what a model sees (messages or prompt, tools, sampling) and seed."""
    keys = ("messages", "prompt", "tools", "tool_choice", "temperature", "top_p", "response_format")
    view = {k: request.get(k) for k in keys}
    blob = json.dumps([view, seed], sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


# ------------------------------------------------------------------------------------- filler text

_DET = ("The", "A", "Each", "This", "Every", "Our", "That")
_ADJ = ("quiet", "simple", "early", "small", "clear", "careful", "usual", "steady", "new", "broad", "local")
_NOUN = (
    "model",
    "team",
    "report",
    "river",
    "value",
    "signal",
    "garden",
    "system",
    "answer",
    "city",
    "sample",
    "method",
    "record",
    "window",
    "result",
    "study",
    "market",
    "school",
    "engine",
    "plan",
)
_VERB = (
    "tracks",
    "shows",
    "keeps",
    "finds",
    "moves",
    "checks",
    "builds",
    "reads",
    "holds",
    "shapes",
    "meets",
)
_PREP = ("near", "with", "after", "before", "under", "across", "beside", "around")


def filler_tokens(rng: random.Random, n: int) -> str:
    """About-English filler of exactly `n` tokens by `count_text_tokens` (every word is one token)."""
    atoms: list[str] = []
    sentences = 0
    while len(atoms) < n:
        start = "\n\n" if sentences and sentences % 5 == 0 else " " if atoms else ""
        if start == "\n\n":
            atoms.append("\n\n")
            start = ""
        words = [rng.choice(_DET)]
        if rng.random() < 0.5:
            words.append(rng.choice(_ADJ))
        words += [rng.choice(_NOUN), rng.choice(_VERB), rng.choice(_DET).lower()]
        if rng.random() < 0.6:
            words.append(rng.choice(_ADJ))
        words.append(rng.choice(_NOUN))
        if rng.random() < 0.4:
            words += [rng.choice(_PREP), rng.choice(_DET).lower(), rng.choice(_NOUN)]
        atoms.append(start + words[0])
        atoms += [" " + w for w in words[1:]]
        atoms.append(".")
        sentences += 1
    return "".join(atoms[:n])


# ------------------------------------------------------------------------------------------ limits


def _scaled_count(reply: Reply, text: str, kept_atoms: int, total_atoms: int) -> int:
    """Tokens after truncation: exact for our own counts, proportional for a model's real counts."""
    if total_atoms == reply.completion_tokens:
        return max(1, kept_atoms)
    return max(1, round(reply.completion_tokens * kept_atoms / max(total_atoms, 1)))


def apply_limits(
    reply: Reply,
    *,
    max_tokens: int | None,
    stop: Sequence[str] = (),
    ignore_eos: bool = False,
    seed: int = 0,
) -> Reply:
    """Enforce the request's `stop`, `max_tokens` and `ignore_eos` on a behaviour's reply.

    A stop string cuts the text before it (it is not returned) with finish_reason "stop"; more
    tokens than `max_tokens` are cut with finish_reason "length"; `ignore_eos` keeps "generating"
    filler until `max_tokens`, as vLLM does. A tool-call reply that does not fit becomes the
    truncated text of its JSON, finish_reason "length".
    """
    if reply.tool_calls:
        if max_tokens is None or reply.completion_tokens <= max_tokens:
            return reply
        text = json.dumps([dict(c) for c in reply.tool_calls])
        reply = Reply(text, reply.completion_tokens, "stop")
    text = reply.content or ""
    atoms: list[str] | None = None  # the text's token pieces, cut only when a limit needs them
    if stop and text:
        cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
        if cut >= 0:
            atoms = token_pieces(text)
            text = text[:cut]
            kept = token_pieces(text) if text else []
            reply = Reply(text, _scaled_count(reply, text, len(kept), len(atoms)), "stop")
            atoms = kept
            ignore_eos = False  # a stop string ends generation even under ignore_eos (vLLM does too)
    if max_tokens is not None and reply.completion_tokens > max_tokens:
        if atoms is None:
            atoms = token_pieces(text) if text else []
        if reply.completion_tokens == len(atoms):
            text = "".join(atoms[:max_tokens])
        else:
            text = "".join(atoms[: math.floor(len(atoms) * max_tokens / reply.completion_tokens)])
        return Reply(text, max_tokens, "length")
    if ignore_eos and max_tokens is not None and reply.completion_tokens == max_tokens:
        return Reply(reply.content, max_tokens, "length")  # it ran to max_tokens, EOS or not
    if ignore_eos and max_tokens is not None and reply.completion_tokens < max_tokens:
        extra = max_tokens - reply.completion_tokens
        # drop the filler's first word so that every appended piece starts with a space
        tail = token_pieces(filler_tokens(random.Random(seed), extra + 1))[1:]
        return Reply((reply.content or "") + "".join(tail), max_tokens, "length")
    return reply


# ------------------------------------------------------------------------------------------ generic


class GenericBehaviour:
    """Readable filler with log-normal lengths; a requested tool call gets empty arguments.

    `mean_tokens` and `sigma` set the length distribution (of the untruncated reply); lengths are
    clipped to [`min_tokens`, `max_tokens`]. With `ignore_eos` the reply fills `max_tokens`.
    """

    name = "generic"

    def __init__(
        self,
        mean_tokens: float = 250.0,
        sigma: float = 0.6,
        min_tokens: int = 1,
        max_tokens: int = 4096,
    ) -> None:
        if mean_tokens <= 0 or sigma < 0 or min_tokens < 1 or max_tokens < min_tokens:
            raise ValueError(
                f"generic behaviour: need mean_tokens > 0, sigma >= 0, 1 <= min_tokens <= max_tokens; got "
                f"mean_tokens={mean_tokens}, sigma={sigma}, min_tokens={min_tokens}, max_tokens={max_tokens}"
            )
        self.mean_tokens = float(mean_tokens)
        self.sigma = float(sigma)
        self.min_tokens = int(min_tokens)
        self.max_tokens = int(max_tokens)
        self._mu = math.log(self.mean_tokens) - self.sigma**2 / 2

    def _forced_tool(self, request: Mapping[str, Any]) -> str | None:
        tools = request.get("tools") or []
        names = [t.get("function", {}).get("name") for t in tools if isinstance(t, Mapping)]
        choice = request.get("tool_choice")
        if isinstance(choice, Mapping):
            name = (choice.get("function") or {}).get("name")
            return name if name in names else None
        if choice == "required" and names:
            return names[0]
        return None

    def reply(self, request: Mapping[str, Any], *, seed: int) -> Reply:
        digest = request_digest(request, seed)
        rng = random.Random(digest)
        tool = self._forced_tool(request)
        if tool is not None:
            call = {
                "id": f"call_{digest:016x}",
                "type": "function",
                "function": {"name": tool, "arguments": "{}"},
            }
            tokens = count_text_tokens(json.dumps(call["function"])) + 3
            return Reply(None, tokens, "tool_calls", (call,))
        n = round(rng.lognormvariate(self._mu, self.sigma)) if self.sigma else round(self.mean_tokens)
        n = min(max(n, self.min_tokens), self.max_tokens)
        limit = request.get("max_tokens") or request.get("max_completion_tokens")
        if request.get("ignore_eos") and isinstance(limit, int) and limit > 0:
            n = limit
        return Reply(filler_tokens(rng, n), n, "stop")


register_behaviour("generic", GenericBehaviour)

__all__ = [
    "BehaviourModel",
    "GenericBehaviour",
    "Reply",
    "UnknownBehaviourError",
    "apply_limits",
    "filler_tokens",
    "get_behaviour",
    "list_behaviours",
    "register_behaviour",
    "request_digest",
]
