"""The engine core's behaviour must emerge from the scheduler and the cost model, not be stored."""

from __future__ import annotations

import pytest

from matrix.llm.sim.core import EngineCore
from matrix.llm.sim.loadgen import RequestSpec, fixed_workload, run_burst, run_closed_loop
from matrix.llm.sim.profile import SimProfile, load_profile


@pytest.fixture(scope="module")
def h100() -> SimProfile:
    return load_profile("h100-llama31-8b")


def drain(core: EngineCore) -> dict[object, list[float]]:
    times: dict[object, list[float]] = {}
    while core.has_work:
        res = core.step()
        for rid in res.tokens:
            times.setdefault(rid, []).append(res.end)
    return times


def test_one_request_produces_exactly_its_tokens(h100: SimProfile) -> None:
    core = EngineCore(h100)
    core.add("a", 100, 7)
    times = drain(core)
    assert len(times["a"]) == 7
    assert times["a"] == sorted(times["a"])
    assert core.kv_usage == 0.0 and not core.has_work
    assert core.stats.generated_tokens == 7 and core.stats.prompt_tokens == 100


def test_ttft_grows_with_prompt_length(h100: SimProfile) -> None:
    short = run_burst(h100, [RequestSpec(100, 8)]).ttft_p50_s
    long = run_burst(h100, [RequestSpec(6000, 8)]).ttft_p50_s
    assert long > 2 * short
    assert short >= h100.api_overhead_s


def test_long_prompt_is_prefilled_in_chunks(h100: SimProfile) -> None:
    core = EngineCore(h100.replace(max_num_batched_tokens=1000))
    core.add("a", 3500, 2)
    steps_before_first = 0
    while True:
        res = core.step()
        steps_before_first += 1
        if res.first_tokens:
            break
        assert res.prefill_tokens == 1000
    assert steps_before_first == 4  # 1000 + 1000 + 1000 + 500


def test_ttft_grows_with_queueing(h100: SimProfile) -> None:
    small = h100.replace(max_num_seqs=4)
    res = run_burst(small, fixed_workload(16, 200, 64))
    ttfts = sorted(r.ttft for r in res.records)
    e2e_alone = run_burst(small, fixed_workload(1, 200, 64)).e2e_p50_s
    # four run at once; each later group of four waits for the one before it to finish
    assert ttfts[3] < 0.1 * e2e_alone
    for group in (1, 2, 3):
        assert ttfts[4 * group] > 0.9 * group * e2e_alone


def test_inter_token_latency_grows_with_batch_size(h100: SimProfile) -> None:
    tpots = [run_closed_loop(h100, fixed_workload(12 * c, 100, 128), c).tpot_p50_s for c in (1, 16, 128)]
    assert tpots[0] < tpots[1] < tpots[2]
    assert tpots[2] > 1.3 * tpots[0]


def test_inter_token_latency_grows_with_context(h100: SimProfile) -> None:
    short = run_closed_loop(h100, fixed_workload(400, 100, 128), 32).tpot_p50_s
    long = run_closed_loop(h100, fixed_workload(400, 4000, 128), 32).tpot_p50_s
    assert long > 1.3 * short


def test_throughput_saturates_at_max_num_seqs(h100: SimProfile) -> None:
    capped = h100.replace(max_num_seqs=16)
    tput = {c: run_closed_loop(capped, fixed_workload(10 * c, 100, 128), c).output_tokens_per_s for c in (8, 16, 64)}
    assert tput[16] > 1.5 * tput[8]
    assert tput[64] == pytest.approx(tput[16], rel=0.05)
    free = run_closed_loop(h100, fixed_workload(640, 100, 128), 64).output_tokens_per_s
    assert free > 2 * tput[64]


def test_throughput_saturates_and_preempts_when_kv_runs_out(h100: SimProfile) -> None:
    tight = h100.replace(kv_cache_tokens=16 * 1024)  # room for ~14 sequences of 1150 tokens
    res = {c: run_closed_loop(tight, fixed_workload(8 * c, 1000, 150), c) for c in (8, 64)}
    assert res[64].preemptions > 0
    assert res[8].preemptions == 0
    # twice... eight times the clients cannot give much more throughput: KV is the bottleneck
    assert res[64].output_tokens_per_s < 2.0 * res[8].output_tokens_per_s
    # and every request still finishes with all of its tokens
    assert all(r.finished > r.first_token for r in res[64].records)


def test_preemption_recomputes_the_most_recent_sequence(h100: SimProfile) -> None:
    prof = h100.replace(kv_cache_tokens=64, block_size=16, max_num_batched_tokens=64)
    core = EngineCore(prof)
    core.add("old", 20, 20)
    core.add("new", 20, 20)
    preempted: list[object] = []
    emitted: dict[object, int] = {"old": 0, "new": 0}
    while core.has_work:
        res = core.step()
        preempted += res.preempted
        for rid in res.tokens:
            emitted[rid] += 1
    assert preempted and set(preempted) == {"new"}
    assert emitted == {"old": 20, "new": 20}
    assert core.stats.recomputed_tokens > 0


def test_requests_that_can_never_fit_are_rejected(h100: SimProfile) -> None:
    core = EngineCore(h100.replace(kv_cache_tokens=1024))
    with pytest.raises(ValueError, match="could never finish"):
        core.add("big", 1000, 100)
    with pytest.raises(ValueError, match="max_model_len"):
        EngineCore(h100).add("huge", h100.max_model_len, 1)
    with pytest.raises(ValueError, match="prompt_tokens"):
        core.add("zero", 0, 1)
    core.add("a", 10, 1)
    with pytest.raises(ValueError, match="already in flight"):
        core.add("a", 10, 1)


def test_abort_frees_the_kv_cache(h100: SimProfile) -> None:
    core = EngineCore(h100)
    core.add("a", 5000, 100)
    core.add("b", 10, 3)
    core.step()
    assert core.kv_usage > 0
    assert core.abort("a") is True
    assert core.abort("a") is False
    drain(core)
    assert core.kv_usage == 0.0 and core.stats.aborted == 1


def test_api_overhead_delays_admission_and_idle_clock_jumps(h100: SimProfile) -> None:
    core = EngineCore(h100)
    core.add("a", 10, 1, arrival=5.0)
    res = core.step()
    assert res.start == pytest.approx(5.0 + h100.api_overhead_s)
    assert res.finished == ("a",)
    assert core.step().idle


def test_virtual_time_runs_are_deterministic(h100: SimProfile) -> None:
    def run() -> list[tuple[float, float]]:
        res = run_closed_loop(h100.replace(kv_cache_tokens=20000), fixed_workload(300, 700, 90), 40)
        return [(r.first_token, r.finished) for r in res.records]

    assert run() == run()


def test_prefix_cache_skips_a_shared_prompt_prefix(h100: SimProfile) -> None:
    """A second request that extends the first one's prompt computes only its new tail."""
    from matrix.llm.sim.tokens import chat_prefix_chain, count_chat_tokens

    system = {"role": "system", "content": "policy " * 3000}
    first = [system, {"role": "user", "content": "hello there"}]
    second = [*first, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "one more question"}]
    cached = h100.replace(enable_prefix_caching=True)
    spent = {}
    for name, profile in (("off", h100), ("on", cached)):
        core = EngineCore(profile)
        for rid, msgs in (("a", first), ("b", second)):
            core.add(rid, count_chat_tokens(msgs), 4, prefix=chat_prefix_chain(msgs))
            drain(core)
        spent[name] = (core.stats.prompt_tokens, core.stats.cached_tokens, core.clock)
    total = count_chat_tokens(first) + count_chat_tokens(second)
    assert spent["off"][:2] == (total, 0)
    computed, hit, _ = spent["on"]
    assert hit == chat_prefix_chain(first)[-1][1]  # all of the first prompt's messages
    assert computed + hit == total
    assert spent["on"][2] < spent["off"][2]  # less prefill, less time


def test_prefix_cache_is_bounded_by_the_kv_budget(h100: SimProfile) -> None:
    small = h100.replace(enable_prefix_caching=True, kv_cache_tokens=4096)
    core = EngineCore(small)
    for i in range(5):  # five unrelated prompts whose first 1,400 tokens are a cacheable message
        core.add(i, 1500, 2, prefix=[(f"p{i}", 1400)])
        drain(core)
    assert core._prefix_cache_tokens <= 4096
    core.add("again-0", 1500, 2, prefix=[("p0", 1400)])  # the oldest was evicted: no hit
    drain(core)
    assert core.stats.cached_tokens == 0
    core.add("again-4", 1500, 2, prefix=[("p4", 1400)])  # the newest is still there
    drain(core)
    assert core.stats.cached_tokens == 1400


def test_a_shared_prefix_holds_kv_memory_once(h100: SimProfile) -> None:
    """Many conversations behind one long system prompt: its KV is held once, as vLLM shares blocks."""
    shared = [("system", 4000)]
    usage = {}
    for caching in (False, True):
        core = EngineCore(h100.replace(enable_prefix_caching=caching))
        core.add("warm", 4100, 1, prefix=[*shared, ("warm-q", 4090)])
        drain(core)
        for i in range(20):
            core.add(i, 4100, 50, prefix=[*shared, (f"q{i}", 4090)])
        for _ in range(5):
            core.step()
        usage[caching] = core.kv_usage
        drain(core)
        assert core.kv_usage == 0.0  # every block (own and shared) comes back
        assert not core._holds
    assert usage[True] < usage[False] / 5


def test_prefix_caching_keeps_its_books_under_preemption(h100: SimProfile) -> None:
    """Random multi-turn conversations on a KV budget small enough to preempt: every block comes back."""
    import random

    rng = random.Random(7)
    core = EngineCore(h100.replace(enable_prefix_caching=True, kv_cache_tokens=12_000))
    chains: dict[int, list[tuple[str, int]]] = {c: [("sys", 3000)] for c in range(12)}
    rid = 0
    for _turn in range(6):
        for conv, chain in chains.items():
            chain.append((f"{conv}-{len(chain)}", chain[-1][1] + rng.randint(50, 900)))
            core.add(rid, chain[-1][1] + 4, rng.randint(1, 400), prefix=list(chain))
            rid += 1
        for _ in range(rng.randint(1, 40)):
            core.step()
            assert core._free_blocks >= 0
        drain(core)
    assert core.stats.preemptions > 0 and core.stats.cached_tokens > 0
    assert core.kv_usage == 0.0 and not core._holds and core.stats.finished == rid
