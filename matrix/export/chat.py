"""OpenAI chat messages as the Chat Completions API shapes them (`openai.types.chat`): a view builds
its records' `messages` with these, so that every case writes the same shapes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


def tool_call(call_id: str, name: str, arguments: Mapping[str, Any] | str) -> dict[str, Any]:
    """`{"id", "type": "function", "function": {"name", "arguments"}}`, arguments as a JSON string."""
    args = arguments if isinstance(arguments, str) else json.dumps(dict(arguments), ensure_ascii=False)
    return {"id": str(call_id), "type": "function", "function": {"name": str(name), "arguments": args}}


def message(
    role: str,
    content: str | None,
    *,
    tool_calls: Sequence[Mapping[str, Any]] | None = None,
    tool_call_id: str | None = None,
) -> dict[str, Any]:
    """One chat message: `content` is kept null only where the API allows it (an assistant's tool call)."""
    if role not in ROLES:
        raise ValueError(f"chat role must be one of {ROLES}, got {role!r}")
    out: dict[str, Any] = {"role": role, "content": content}
    if role == "assistant" and tool_calls:
        out["tool_calls"] = [dict(c) for c in tool_calls]
    elif content is None:
        out["content"] = ""
    if role == "tool":
        out["tool_call_id"] = str(tool_call_id or "")
    return out
