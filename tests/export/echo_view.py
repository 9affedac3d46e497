"""A view for the dummy `echo` workflow, as a new case would bring one (`matrix export --views MODULE`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matrix.export import Field, LeftOut, Record, RunInfo, register_view


class EchoView:
    workflow = "echo"
    fields = (Field("x", "int", "the input row's x"),)

    def records(self, row: Mapping[str, Any], run: RunInfo) -> list[Record]:
        x = int((row.get("row") or {}).get("x", 0))
        if x % 5 == 0:
            raise LeftOut("x is a multiple of 5")
        said = [str(t["content"]) for t in row.get("turns") or []]
        messages = [{"role": "user", "content": f"echo {x}"}, {"role": "assistant", "content": " ".join(said)}]
        return [{"messages": messages, "tools": None, "metadata": {"view": "echo", "x": x}}]


VIEW = register_view(EchoView())
