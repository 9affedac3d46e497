"""NaturalReasoning curation (paper 5.2): web documents through filter, score and question."""

from __future__ import annotations

from typing import Any

from experiments.cases.base import Case, warm_up_chats
from experiments.common import backend_labels
from matrix.agent import RoleSpec
from matrix.cases import nr
from matrix.llm.backends.base import Pool

# The tiny CPU model has a 2,048-token context: documents are cut shorter and replies kept short.
SMALL_MODEL_SETTINGS = nr.NRSettings(
    score=nr.Sampling(temperature=0.2, top_p=0.9, max_tokens=256),
    question=nr.Sampling(temperature=0.0, top_p=0.9, max_tokens=320),
    max_doc_chars=2400,
)
SMALL_CONTEXT = 4096


def load_documents(source: str | None, *, limit: int, seed: int = 0) -> str | list[dict[str, Any]]:
    """A path (.jsonl / .jsonl.gz / .jsonl.zst) or `hf://NAME` is read by the systems themselves;
    None or "generated" gives `limit` generated web-like documents (offline)."""
    if source in (None, "", "generated"):
        from matrix.cases.nr.docs import generate_documents

        return generate_documents(limit, seed=seed)
    return str(source)


class NRCase(Case):
    name = "natural_reasoning"
    workflow = nr.WORKFLOW
    workflow_module = "matrix.cases.nr"

    def settings(self, pools: dict[str, Pool]) -> nr.NRSettings:
        windows = [p.context_window for p in pools.values() if p.context_window is not None]
        return SMALL_MODEL_SETTINGS if windows and min(windows) <= SMALL_CONTEXT else nr.NRSettings()

    def inputs(self, settings: Any) -> str | list[dict[str, Any]]:
        return load_documents(self.cfg.input, limit=int(self.cfg.limit), seed=int(self.cfg.get("seed", 0)))

    def limit(self, inputs: Any) -> int | None:
        return None if isinstance(inputs, list) else int(self.cfg.limit)

    def warm_up(self, pools: dict[str, Pool], inputs: Any, settings: Any) -> None:
        if not isinstance(inputs, list):
            return
        texts = [str(d.get("text")) for d in inputs[:8] if isinstance(d.get("text"), str)]
        small, large = pools["small"], pools["large"]
        short_filter = {**settings.filter.body(), "max_tokens": 8}
        short_score = {**settings.score.body(), "max_tokens": 8}
        chats = [(small, nr.classifier_messages(t, settings), short_filter) for t in texts]
        chats += [(large, nr.score_messages(t, settings), short_score) for t in texts]
        warm_up_chats(chats)

    def p2p_roles(self, pools: dict[str, Pool], settings: Any, instances: int) -> list[RoleSpec]:
        small, large = pools["small"], pools["large"]
        dep = nr.NRDeployment(small.urls, large.urls, small.model, large.model, settings, instances=instances)
        return dep.roles()

    def p2p_tag(self, concurrency: int, partitions: int, instances: int) -> str:
        return f"p{partitions}-t{concurrency // partitions}-a{instances}"

    def p2p_labels(self, concurrency: int, partitions: int, instances: int) -> dict[str, Any]:
        return {"parallelism": [partitions, concurrency // partitions, instances]}

    def quality(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(nr.quality(rows))

    def labels(self, pools: dict[str, Pool]) -> dict[str, Any]:
        small, large = pools["small"], pools["large"]
        replicas = len(set(small.urls) | set(large.urls))
        info: dict[str, Any] = {}
        if small.simulated:
            hardware = f"SIMULATED {small.info['replicas']} x {small.info['profile']} + " + (
                f"{large.info['replicas']} x {large.info['profile']}"
            )
            info = {
                "small_profile": small.info["profile"],
                "large_profile": large.info["profile"],
                "small_replicas": small.info["replicas"],
                "large_replicas": large.info["replicas"],
                "behaviour": small.info["behaviour"],
                "behaviour_config": small.info["behaviour_config"],
            }
        elif small.urls == large.urls:
            hardware = small.hardware
        else:
            hardware = f"{small.hardware} + {large.hardware}"
        return backend_labels(self.name, small.backend, small.simulated, small.time_scale, hardware, replicas, info)
