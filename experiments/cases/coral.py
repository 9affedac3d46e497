"""Coral (paper 5.1): two agents discuss a multiple-choice question until they agree."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from experiments.cases.base import Case, pool_specs_from, warm_up_chats
from matrix.agent import RoleSpec
from matrix.cases import coral
from matrix.llm.backends.base import Pool, PoolSpec

# The tiny CPU model's context is 2,048 tokens, so turns are shorter and fewer than the paper's
# (1,024 tokens, 20 turns). Everything else is the paper's protocol.
SMALL_MODEL_SETTINGS = coral.CoralSettings(
    max_turns=4,
    dialogue=coral.Sampling(temperature=0.2, top_p=0.9, max_tokens=160),
    extractor=coral.EXTRACTOR_SAMPLING,
)
SMALL_CONTEXT = 4096  # a pool with at most this many tokens of context gets SMALL_MODEL_SETTINGS


def _local_file(source: Any) -> str | None:
    text = str(source) if source is not None else ""
    return None if text in ("", "generated", "None") or text.startswith("hf://") else text


class CoralCase(Case):
    name = "coral"
    workflow = coral.WORKFLOW
    workflow_module = "matrix.cases.coral"

    def pool_specs(self) -> list[PoolSpec]:
        # The sim behaviour is grounded in real Llama-3.1-8B-Instruct answers when the input is the
        # MMLU-Pro file that carries them; length_scale stretches the replies (Table 1's workload).
        grounding: dict[str, Any] = {"length_scale": float(self.cfg.get("length_scale", 1.0))}
        if dataset := _local_file(self.cfg.input):
            grounding["dataset"] = dataset
        return pool_specs_from(self.cfg.models, {name: grounding for name in self.cfg.models})

    def settings(self, pools: dict[str, Pool]) -> coral.CoralSettings:
        window = pools["dialogue"].context_window
        settings = SMALL_MODEL_SETTINGS if window is not None and window <= SMALL_CONTEXT else coral.CoralSettings()
        if self.cfg.get("max_turns"):
            settings = coral.CoralSettings(int(self.cfg.max_turns), settings.dialogue, settings.extractor)
        return settings

    def inputs(self, settings: Any) -> list[dict[str, Any]]:
        source = self.cfg.input
        return coral.load_questions(None if source in (None, "generated") else str(source), limit=int(self.cfg.limit))

    def warm_up(self, pools: dict[str, Pool], inputs: Any, settings: Any) -> None:
        pool = pools["dialogue"]
        n = max(1, min(int(self.cfg.get("warm_up", 16)), len(inputs)))
        questions = []
        for r in inputs:
            with contextlib.suppress(ValueError):
                questions.append(coral.question_of(r))
            if len(questions) >= n:
                break
        body = settings.dialogue.body()
        chats = [(pool, coral.dialogue_messages(q, []), body) for _ in pool.urls for q in questions]
        warm_up_chats(chats, max_concurrency=n)

    def p2p_roles(self, pools: dict[str, Pool], settings: Any, instances: int) -> list[RoleSpec]:
        pool = pools["dialogue"]
        deployment = coral.CoralDeployment(urls=pool.urls, model=pool.model, settings=settings, instances=instances)
        return deployment.roles()

    def quality(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(coral.quality(rows))

    def extra_metrics(self, run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
        from experiments.coral import backend_efficiency

        efficiency = backend_efficiency(metrics, run_dir)
        return {"backend_efficiency": efficiency} if efficiency else {}
