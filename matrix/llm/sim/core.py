"""The simulated engine's core: a synchronous, discrete-event model of one continuous-batching replica.

No asyncio and no wall clock: `step()` decides which sequences run in the next engine step, as
vLLM's V1 scheduler would, returns how long that step takes in simulated seconds (from the
profile's cost model) and advances the simulated clock. The same core runs behind the HTTP server
(in scaled real time, `engine.py`) and in the calibration (in virtual time, instantly and
deterministically, `loadgen.py`), so the numbers the calibration prints are the numbers the server
produces.

Scheduling, as in vLLM V1:
- a request becomes schedulable `api_overhead_s` after it arrives (HTTP, tokenisation, hand-off);
- running sequences go first, in admission order, each taking the tokens it still needs (a whole
  prefill chunk, or one decode token) out of the step's `max_num_batched_tokens` budget;
- waiting sequences are admitted first come, first served while fewer than `max_num_seqs` run,
  budget is left and their KV blocks fit;
- KV blocks are allocated as a sequence grows; when a running sequence cannot get one, the most
  recently admitted sequence is preempted back to the head of the queue and its KV dropped (it is
  recomputed when readmitted, prompt and already generated tokens alike);
- a sequence whose computed tokens catch up with its known tokens samples one new token at the end
  of the step;
- with `enable_prefix_caching` (vLLM's automatic prefix caching), the caller describes a chat prompt
  as a chain of prefix keys (one per message, each naming the whole prompt up to the end of that
  message, with the prompt length there). Keys of computed prompts stay in an LRU bounded by the KV
  budget. A request admitted with nothing computed takes the longest cached run of its keys as
  already computed (short of its last prompt token), so only the rest is prefilled. KV memory is
  shared as in vLLM: a key's tokens are held once, with a count of the running sequences that use
  them (a sequence holds its hit keys from admission and the rest of its chain once its prompt is
  computed), and only a sequence's tokens beyond its held keys are its own. The shared prompt of
  many conversations (a system prompt, the tool list) therefore costs memory once. Simplification:
  the cache works per message, not per 16-token block, so a hit may end inside a block.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from matrix.llm.sim.profile import SimProfile

RequestId = Hashable


@dataclass(eq=False)
class _Sequence:
    request_id: RequestId
    prompt_tokens: int
    max_output_tokens: int
    arrival: float
    ready: float
    generated: int = 0
    computed: int = 0
    blocks: int = 0
    first_token_at: float | None = None
    preemptions: int = 0
    aborted: bool = False
    prefix: tuple[tuple[Hashable, int], ...] = ()
    held: int = 0  # how many keys of `prefix` (from the start) this sequence holds
    covered: int = 0  # prompt tokens those keys cover (KV charged to the keys, not to the sequence)

    def remaining(self) -> int:
        return self.prompt_tokens + self.generated - self.computed


@dataclass(frozen=True)
class StepResult:
    """What one engine step did. Times are simulated seconds; tokens are emitted at `end`."""

    start: float
    duration: float
    tokens: tuple[RequestId, ...] = ()
    first_tokens: tuple[RequestId, ...] = ()
    finished: tuple[RequestId, ...] = ()
    preempted: tuple[RequestId, ...] = ()
    prefill_tokens: int = 0
    decode_tokens: int = 0
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def idle(self) -> bool:
        return self.duration == 0.0 and not self.tokens


@dataclass
class CoreStats:
    """Running totals since the core was created (simulated seconds)."""

    steps: int = 0
    busy_s: float = 0.0
    prompt_tokens: int = 0
    recomputed_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    finished: int = 0
    aborted: int = 0
    preemptions: int = 0
    step_durations: list[float] = field(default_factory=list, repr=False)


class EngineCore:
    """One simulated replica's scheduler and clock.

    Request ids are any hashable values the caller chooses; each may be in flight once.
    """

    def __init__(self, profile: SimProfile, *, record_steps: bool = False) -> None:
        self.profile = profile
        self.clock = 0.0
        self.stats = CoreStats()
        self._record_steps = record_steps
        self._total_blocks = profile.kv_blocks
        self._free_blocks = self._total_blocks
        self._seqs: dict[RequestId, _Sequence] = {}
        self._pending: list[tuple[float, int, _Sequence]] = []
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._order = itertools.count()
        # prefix key -> tokens that key's segment adds; LRU order (oldest first), bounded by the KV budget
        self._prefix_cache: OrderedDict[Hashable, int] = OrderedDict()
        self._prefix_cache_tokens = 0
        # prefix key -> [running sequences holding it, KV blocks charged for it]
        self._holds: dict[Hashable, list[int]] = {}

    # ----------------------------------------------------------------------------- requests

    def add(
        self,
        request_id: RequestId,
        prompt_tokens: int,
        max_output_tokens: int,
        *,
        arrival: float | None = None,
        prefix: Sequence[tuple[Hashable, int]] = (),
    ) -> None:
        """Queue a request that will produce exactly `max_output_tokens` tokens.

        The behaviour model has already decided the reply, so its length is known up front; the
        core only decides when each token comes out. `arrival` (simulated seconds, default: now)
        may lie in the past (it arrived during the step that is ending) or the future. `prefix`
        is the prompt's chain of (key, prompt tokens up to the end of that key's segment), used
        when the profile enables prefix caching.
        """
        if request_id in self._seqs:
            raise ValueError(f"request id {request_id!r} is already in flight")
        if not isinstance(prompt_tokens, int) or prompt_tokens < 1:
            raise ValueError(f"prompt_tokens must be an integer >= 1, got {prompt_tokens!r}")
        if not isinstance(max_output_tokens, int) or max_output_tokens < 1:
            raise ValueError(f"max_output_tokens must be an integer >= 1, got {max_output_tokens!r}")
        total = prompt_tokens + max_output_tokens
        if total > self.profile.max_model_len:
            raise ValueError(
                f"request {request_id!r} needs {total} tokens ({prompt_tokens} prompt + "
                f"{max_output_tokens} output), more than max_model_len {self.profile.max_model_len}"
            )
        capacity = self._total_blocks * self.profile.block_size
        if total > capacity:
            raise ValueError(
                f"request {request_id!r} needs {total} tokens of KV cache but the profile holds "
                f"{capacity}; it could never finish"
            )
        at = self.clock if arrival is None else float(arrival)
        seq = _Sequence(request_id, prompt_tokens, max_output_tokens, at, at + self.profile.api_overhead_s)
        seq.prefix = tuple(prefix) if self.profile.enable_prefix_caching else ()
        self._seqs[request_id] = seq
        heapq.heappush(self._pending, (seq.ready, next(self._order), seq))

    def abort(self, request_id: RequestId) -> bool:
        """Drop a request (its client went away) and free its KV; False if it is not in flight."""
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            return False
        seq.aborted = True
        if seq in self._running:
            self._running.remove(seq)
        elif seq in self._waiting:
            self._waiting.remove(seq)
        self._free(seq)
        self.stats.aborted += 1
        return True

    def advance_to(self, t: float) -> None:
        """Move an idle clock forward (time passes with nothing to do); never backwards."""
        if self._running or self._waiting:
            raise RuntimeError("advance_to() is only for an idle core; call step() while work remains")
        self.clock = max(self.clock, t)

    # ----------------------------------------------------------------------------- state

    @property
    def has_work(self) -> bool:
        return bool(self._seqs)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        """Requests queued for admission, including those still in the API hand-off."""
        return len(self._seqs) - len(self._running)

    @property
    def kv_usage(self) -> float:
        return 1.0 - self._free_blocks / self._total_blocks

    def next_ready(self) -> float | None:
        """When the earliest not-yet-schedulable request becomes schedulable, if any."""
        while self._pending and self._pending[0][2].aborted:
            heapq.heappop(self._pending)
        return self._pending[0][0] if self._pending else None

    # ----------------------------------------------------------------------------- stepping

    def _free(self, seq: _Sequence) -> None:
        self._free_blocks += seq.blocks
        seq.blocks = 0
        for key, _ in seq.prefix[: seq.held]:
            hold = self._holds[key]
            hold[0] -= 1
            if hold[0] == 0:
                self._free_blocks += hold[1]
                del self._holds[key]
        seq.held = seq.covered = 0

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.profile.block_size)

    def _segments(self, seq: _Sequence, start: int, stop: int) -> list[tuple[Hashable, int]]:
        """(key, tokens of its segment) for keys start..stop-1 of the sequence's chain."""
        before = seq.prefix[start - 1][1] if start > 0 else 0
        out = []
        for key, upto in seq.prefix[start:stop]:
            out.append((key, upto - before))
            before = upto
        return out

    def _hit(self, seq: _Sequence) -> int:
        """How many keys of the chain, from the start, are cached (never reaching the last prompt token)."""
        n = 0
        for key, upto in seq.prefix:
            if key not in self._prefix_cache or upto >= seq.prompt_tokens:
                break
            n += 1
        return n

    def _new_key_blocks(self, seq: _Sequence, start: int, stop: int) -> int:
        """Blocks that holding keys start..stop-1 would add (keys nobody holds yet)."""
        return sum(self._blocks_for(t) for key, t in self._segments(seq, start, stop) if key not in self._holds)

    def _hold(self, seq: _Sequence, stop: int) -> None:
        """Hold keys up to `stop` (they cover the prompt up to that key's end); charges new keys' blocks."""
        for key, tokens in self._segments(seq, seq.held, stop):
            hold = self._holds.get(key)
            if hold is None:
                blocks = self._blocks_for(tokens)
                self._holds[key] = [1, blocks]
                self._free_blocks -= blocks
            else:
                hold[0] += 1
        if stop > seq.held:
            seq.held = stop
            seq.covered = seq.prefix[stop - 1][1]

    def _own_blocks(self, seq: _Sequence, computed: int) -> int:
        return self._blocks_for(max(computed - seq.covered, 0))

    def _remember_prefix(self, seq: _Sequence) -> None:
        cache, before = self._prefix_cache, 0
        for key, upto in seq.prefix:
            if key in cache:
                cache.move_to_end(key)
            else:
                cache[key] = max(upto - before, 0)
                self._prefix_cache_tokens += cache[key]
            before = upto
        while self._prefix_cache_tokens > self.profile.kv_cache_tokens and cache:
            _, tokens = cache.popitem(last=False)
            self._prefix_cache_tokens -= tokens

    def _release_pending(self) -> None:
        while self._pending and (self._pending[0][0] <= self.clock or self._pending[0][2].aborted):
            _, _, seq = heapq.heappop(self._pending)
            if not seq.aborted:
                self._waiting.append(seq)

    def step(self) -> StepResult:
        """Run one engine step; an idle core (nothing schedulable, nothing pending) returns at once.

        If nothing is schedulable yet but a request is in its API hand-off, the clock first jumps
        to when it becomes schedulable.
        """
        self._release_pending()
        if not self._running and not self._waiting:
            ready = self.next_ready()
            if ready is None:
                return StepResult(start=self.clock, duration=0.0)
            self.clock = max(self.clock, ready)
            self._release_pending()

        profile = self.profile
        budget = profile.max_num_batched_tokens
        scheduled: list[tuple[_Sequence, int]] = []
        preempted: list[_Sequence] = []

        i = 0
        while i < len(self._running) and budget > 0:
            seq = self._running[i]
            n = min(seq.remaining(), budget)
            need = self._own_blocks(seq, seq.computed + n) - seq.blocks
            preempted_self = False
            while need > self._free_blocks:
                victim = self._running.pop()
                self._free(victim)
                victim.computed = 0
                victim.preemptions += 1
                self._waiting.appendleft(victim)
                preempted.append(victim)
                if victim is seq:
                    preempted_self = True
                    break
            if preempted_self:
                break
            self._free_blocks -= need
            seq.blocks += need
            scheduled.append((seq, n))
            budget -= n
            i += 1

        if not preempted:
            while self._waiting and budget > 0 and len(self._running) < profile.max_num_seqs:
                seq = self._waiting[0]
                hit = self._hit(seq) if seq.computed == 0 and seq.prefix else 0
                begin = seq.prefix[hit - 1][1] if hit else seq.computed
                n = min(seq.prompt_tokens + seq.generated - begin, budget)
                covered = begin if hit else seq.covered
                need = self._blocks_for(max(begin + n - covered, 0)) - seq.blocks + self._new_key_blocks(seq, 0, hit)
                if need > self._free_blocks:
                    break
                if hit:
                    self._hold(seq, hit)
                    seq.computed = begin
                    self.stats.cached_tokens += begin
                    need = self._own_blocks(seq, begin + n) - seq.blocks
                self._waiting.popleft()
                self._running.append(seq)
                self._free_blocks -= need
                seq.blocks += need
                scheduled.append((seq, n))
                budget -= n

        tokens = context = 0
        pairs = 0.0
        prefill = decode = 0
        for seq, n in scheduled:
            tokens += n
            context += seq.computed + n
            pairs += n * (seq.computed + (n + 1) / 2)
            if seq.generated > 0 and seq.remaining() == 1:
                decode += 1
            else:
                prefill += n
                if seq.preemptions:
                    self.stats.recomputed_tokens += n
                else:
                    self.stats.prompt_tokens += n

        start = self.clock
        duration = profile.step_time(
            tokens=tokens, sequences=len(scheduled), context_tokens=context, attention_pairs=pairs
        )
        self.clock = start + duration
        end = self.clock

        emitted: list[RequestId] = []
        first: list[RequestId] = []
        finished: list[RequestId] = []
        for seq, n in scheduled:
            before = seq.computed
            seq.computed += n
            if seq.prefix and before < seq.prompt_tokens <= seq.computed:
                self._remember_prefix(seq)
                # its prompt's KV is now the keys' (shared); what is left is its own
                own = seq.blocks
                self._free_blocks += own
                seq.blocks = 0
                self._hold(seq, len(seq.prefix))
                seq.blocks = self._own_blocks(seq, seq.computed)
                self._free_blocks -= seq.blocks
            if seq.computed == seq.prompt_tokens + seq.generated:
                seq.generated += 1
                emitted.append(seq.request_id)
                if seq.first_token_at is None:
                    seq.first_token_at = end
                    first.append(seq.request_id)
                if seq.generated >= seq.max_output_tokens:
                    finished.append(seq.request_id)
        if finished:
            done = set(finished)
            keep = []
            for seq in self._running:
                if seq.request_id in done:
                    self._free(seq)
                    del self._seqs[seq.request_id]
                else:
                    keep.append(seq)
            self._running = keep

        st = self.stats
        st.steps += 1
        st.busy_s += duration
        st.generated_tokens += len(emitted)
        st.finished += len(finished)
        st.preemptions += len(preempted)
        if self._record_steps:
            st.step_durations.append(duration)
        return StepResult(
            start=start,
            duration=duration,
            tokens=tuple(emitted),
            first_tokens=tuple(first),
            finished=tuple(finished),
            preempted=tuple(s.request_id for s in preempted),
            prefill_tokens=prefill,
            decode_tokens=decode,
            running=len(self._running),
            waiting=self.num_waiting,
            kv_usage=self.kv_usage,
        )
