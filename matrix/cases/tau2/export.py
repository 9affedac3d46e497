"""Tau2's export view: the assistant's view of a trajectory with its tool calls, and the user
simulator's view, each as the model saw it (tau2's system prompt, the tool schemas offered, the
history tau2 gives that side) and in OpenAI chat shapes.

- assistant: tau2's agent system prompt (its instructions and the domain policy), the user's text
  messages as `user`, its own messages (text or `tool_calls`) as `assistant`, the results of its tool
  calls as `tool`; `tools` are the domain's assistant tools.
- user: tau2's user-simulator system prompt (guidelines and the task's scenario) with the roles
  flipped as tau2 flips them: its own messages (text or calls of the user's tools) as `assistant`,
  the assistant's text as `user`, its tool results as `tool`; `tools` are the domain's user tools.

`metadata.turn_index` gives, for each message after the system prompt, its position in the whole
trajectory, so that `trajectory_of` puts the two views back together into tau2's own messages, and
tau2's evaluator scores them again (`rescore_records`). A reasoning model's reasoning (gpt-oss returns
it beside each reply) is no chat message: it is in `metadata.reasoning`, by trajectory position.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache, lru_cache
from typing import Any

from matrix.cases.tau2 import WORKFLOW, Tau2Settings, import_tau2, reward_of
from matrix.export import Field, Record, RunInfo, register_view
from matrix.export.chat import message, tool_call

MESSAGE_ROLES = ("assistant", "user", "tool")


@cache
def _domain(domain: str) -> Any:
    from matrix.cases.tau2 import _Domain

    return _Domain.get(domain)


@cache
def _agent_system(domain: str) -> str:
    from tau2.agent.llm_agent import LLMAgent

    dom = _domain(domain)
    state = LLMAgent(tools=dom.tools, domain_policy=dom.policy, llm=None).get_init_state([])
    return "\n".join(str(m.content) for m in state.system_messages)


@lru_cache(maxsize=4096)
def _user_system(domain: str, task_id: str) -> str:
    from tau2.user.user_simulator import UserSimulator

    dom = _domain(domain)
    task = dom.tasks[task_id]
    sim = UserSimulator(tools=dom.user_tools, instructions=str(task.user_scenario), llm=None)
    return "\n".join(str(m.content) for m in sim.get_init_state([]).system_messages)


def _calls(msg: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [tool_call(c.get("id") or "", c["name"], c.get("arguments") or {}) for c in msg.get("tool_calls") or []]


def assistant_view(trajectory: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """The assistant's messages (tau2's `is_valid_agent_history_message`) and their trajectory indices."""
    out, index = [], []
    for i, m in enumerate(trajectory):
        role = m.get("role")
        if role == "assistant":
            out.append(message("assistant", m.get("content"), tool_calls=_calls(m)))
        elif role == "user" and not m.get("tool_calls"):
            out.append(message("user", m.get("content")))
        elif role == "tool" and m.get("requestor", "assistant") == "assistant":
            out.append(message("tool", m.get("content"), tool_call_id=m.get("id")))
        else:
            continue
        index.append(i)
    return out, index


def user_view(trajectory: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """The user simulator's messages with tau2's flipped roles (`UserState.flip_roles`), and their indices."""
    out, index = [], []
    for i, m in enumerate(trajectory):
        role = m.get("role")
        if role == "user":
            out.append(message("assistant", m.get("content"), tool_calls=_calls(m)))
        elif role == "assistant" and not m.get("tool_calls"):
            out.append(message("user", m.get("content")))
        elif role == "tool" and m.get("requestor") == "user":
            out.append(message("tool", m.get("content"), tool_call_id=m.get("id")))
        else:
            continue
        index.append(i)
    return out, index


class Tau2View:
    workflow = WORKFLOW
    fields = (
        Field("domain", "str", "the tau2 domain"),
        Field("tau2_task", "str", "tau2's task id"),
        Field("reward", "float", "tau2's reward for the trajectory (null when it was not scored)"),
        Field("termination", "str", "how the trajectory ended (tau2's termination reason)"),
        Field("reward_info", "json", "tau2's evaluation: reward breakdown, DB and action checks"),
        Field("trial_seed", "int", "tau2's per-trial seed"),
        Field("trajectory_messages", "int", "messages in the whole trajectory (both sides, tool results)"),
        Field("turn_index", "json", "per message after the system prompt: its index in the whole trajectory"),
        Field("reasoning", "json", "a reasoning model's reasoning beside this side's own messages: {turn_index, text}"),
    )

    def records(self, row: Mapping[str, Any], run: RunInfo) -> list[Record]:
        import_tau2()
        route = row.get("route") or {}
        settings = run.settings()
        domain = str((row.get("row") or {}).get("domain") or settings.get("domain") or Tau2Settings.domain)
        task_id = str(route.get("tau2_task") or row.get("task_id"))
        trajectory = [dict(t["content"]) for t in row.get("turns") or [] if t.get("role") in MESSAGE_ROLES]
        reward_turn = next((t for t in reversed(row.get("turns") or []) if t.get("role") == "reward"), None)
        sampling = {k: settings[k] for k in ("temperature", "top_p", "max_tokens") if k in settings} or None
        shared = {
            "model": run.model("agent"),
            "sampling": sampling,
            "domain": domain,
            "tau2_task": task_id,
            "reward": reward_of(row),
            "termination": route.get("termination"),
            "reward_info": reward_turn.get("content") if reward_turn else None,
            "trial_seed": route.get("trial_seed"),
            "trajectory_messages": len(trajectory),
        }
        dom = _domain(domain)
        records = []
        sides = (
            ("assistant", assistant_view, _agent_system(domain), dom.schemas),
            ("user", user_view, _user_system(domain, task_id), dom.user_schemas),
        )
        for side, build, system, tools in sides:
            msgs, index = build(trajectory)
            if not any(m["role"] == "assistant" for m in msgs):
                continue
            reasoning = [
                {"turn_index": i, "text": trajectory[i]["reasoning_content"]}
                for i in index
                if trajectory[i].get("role") == side and trajectory[i].get("reasoning_content")
            ]
            meta = {**shared, "view": side, "turn_index": index, "reasoning": reasoning or None}
            records.append({"messages": [message("system", system), *msgs], "tools": tools or None, "metadata": meta})
        return records


def trajectory_of(records: Sequence[Record]) -> list[Any]:
    """tau2's messages of one trajectory, rebuilt from its records (both views, or the assistant's
    alone where the user has no tools). A message both views hold must read the same in both."""
    import_tau2()
    from tau2.data_model.message import AssistantMessage, ToolCall, ToolMessage, UserMessage

    def calls(m: Mapping[str, Any], requestor: str) -> list[Any] | None:
        out = [
            ToolCall(id=c["id"], name=c["function"]["name"], arguments=json.loads(c["function"]["arguments"]),
                     requestor=requestor)
            for c in m.get("tool_calls") or []
        ]  # fmt: skip
        return out or None

    by_index: dict[int, Any] = {}
    for rec in records:
        side = rec["metadata"]["view"]
        other = "user" if side == "assistant" else "assistant"
        for i, m in zip(rec["metadata"]["turn_index"], rec["messages"][1:], strict=True):
            if m["role"] == "tool":
                msg: Any = ToolMessage(id=m["tool_call_id"], role="tool", content=m["content"], requestor=side)
            elif m["role"] == "assistant":  # the side's own message
                kind = AssistantMessage if side == "assistant" else UserMessage
                msg = kind(role=side, content=m.get("content"), tool_calls=calls(m, side))
            else:  # the other side's text
                kind = UserMessage if side == "assistant" else AssistantMessage
                msg = kind(role=other, content=m.get("content"))
            if i in by_index:
                seen = by_index[i]
                if (seen.role, seen.content) != (msg.role, msg.content):
                    raise ValueError(f"the two views disagree on trajectory message {i}")
                continue
            by_index[i] = msg
    gaps = sorted(set(range(max(by_index, default=-1) + 1)) - set(by_index))
    if gaps:
        raise ValueError(f"trajectory messages {gaps[:5]} are in no record (export both views of the trajectory)")
    return [by_index[i] for i in sorted(by_index)]


def rescore_records(records: Sequence[Record], evaluation: str = "all") -> float:
    """tau2's reward for the trajectory that `records` hold, from tau2's evaluator."""
    import_tau2()
    from tau2.data_model.simulation import SimulationRun

    from matrix.cases.tau2 import TAU2_ENDINGS, evaluate

    meta = records[0]["metadata"]
    messages = trajectory_of(records)
    for i, m in enumerate(messages):
        m.turn_idx = i
    ending = meta.get("termination") or "agent_error"
    sim = SimulationRun(
        id=f"{meta['task_id']}#{meta['trial']}",
        task_id=str(meta["tau2_task"]),
        start_time="",
        end_time="",
        duration=0.0,
        termination_reason=ending if ending in TAU2_ENDINGS else "agent_error",
        messages=messages,
        trial=int(meta["trial"]),
        seed=meta.get("trial_seed"),
    )
    task = _domain(str(meta["domain"])).tasks[str(meta["tau2_task"])]
    return float(evaluate(str(meta["domain"]), task, sim, evaluation)["reward"])


VIEW = register_view(Tau2View())

__all__ = ["VIEW", "Tau2View", "assistant_view", "rescore_records", "trajectory_of", "user_view"]
