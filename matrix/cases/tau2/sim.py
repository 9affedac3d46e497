"""A behaviour model for the simulated engine that plays gpt-oss-120b on tau2-bench, both sides.

Register name ``tau2`` (import path ``matrix.cases.tau2.sim:Tau2Behaviour``). One model serves both
the user simulator (system prompt holds ``<scenario>``) and the customer-service assistant (system
prompt holds ``<policy>``), as gpt-oss-120b does in the paper's tau2 run. Like every behaviour it
reads only the request body and the task set it was configured with (tau2's own tasks for
``domain``, plus tau2's environment code to predict what a read-only tool would show for a task);
the same (request, seed) always gives the same reply, tool-call ids included.

User side. The scenario text is looked up among ``str(task.user_scenario)`` of the task set (telecom:
114 tasks share 15 scenario texts, which differ only in hidden device/account state, so the user
never needs more than its scenario). Its opening states its reason for call and known info verbatim
(plain-string instructions, as in mock: the whole text). When the assistant asks it to run a tool,
written as ``run `name` with arguments {json}``, it emits that tool call if the request offers the
tool, and after the tool result reports it verbatim (``I ran `name` with arguments {...}. It
returned:`` then the result between ``<<<`` and ``>>>`` lines). It confirms when asked to confirm,
and ends with ``###STOP###`` (``###TRANSFER###`` after a transfer) when the assistant wraps up.

Assistant side. Candidates are the tasks whose reason for call and known info both appear in the
user's messages. Ambiguity of that first step (measured over tau2's task sets): telecom 114 tasks
fall into 5 groups (7 to 35 tasks); airline 50 tasks into 49 (the one pair has the same reference
actions); retail 114 into 114; mock 9 into 6. Within a group it identifies the task the way a real
agent troubleshoots: it looks the customer up (``get_customer_by_phone``, then
``get_details_by_id`` on lines until the caller's line) and, while the remaining candidates disagree
on what to do next, asks the user to run the read-only device check (``check_*``, ``run_speed_test``,
``can_send_mms``) whose predicted outputs split them best. A candidate stays while every
observed tool result (its own, or reported by the user) equals what tau2's environment returns for
that task after the reference actions done so far. Progress is the number of reference actions found
in the conversation (its own tool calls, and the user's reports). When the candidates agree on the
next action it is taken; when no check splits them the first in task order is chosen (a mistake
that counts). Over the 114 telecom tasks this leaves no ambiguity: oracle mode scores 1.0 on all.
Reference actions (``task.evaluation_criteria.actions``) are then followed in order: an assistant
action is emitted as a tool call, a user action as a text request for the user. In airline and retail
it asks the user to confirm once before its first action that changes the database (their policies
require explicit confirmation). When all are done it sends every ``communicate_info`` string.

Modes. ``oracle`` always follows the reference (reward 1.0 with tau2's evaluator on every airline,
telecom, retail and mock task). ``nothing`` never calls a tool and says it cannot help (scripted trajectories,
measured with tau2's evaluator: airline 0.38, telecom 0.0, retail 0.061). ``model`` decides per
trajectory, from a hash of the identified task id, the request's ``seed`` and ``seed_salt`` (so every
call of one trajectory, and both systems sending the same seed, get the same decision), to follow
the reference with probability ``competence``, or else to wrap up after k of the task's n reference
actions, k uniform in [0, n) (as a real agent that stops troubleshooting too early or forgets a
step). The default competence sets E[reward] to the paper's 0.59 (Table 10, gpt-oss-120b, telecom:
0.5918 baseline, 0.5921 Matrix): ``c = (0.59 - f) / (1 - f)`` with f the measured mean reward of
failed trajectories (telecom 0.053, measured with competence 0 over 114 tasks x 3 seeds, giving
c = 0.567; airline/retail use their do-nothing rewards 0.38/0.061 as f). Tasks without reference
actions cannot fail this way. Measured, model mode on telecom: 0.634 over 114 tasks x seeds 300-302
(61% of those trajectories drew success; across other seed triples that share is 0.55 to 0.62,
so the mean reward moves by about 0.04 either way).

Lengths. gpt-oss-120b with "Reasoning: high" counts hidden reasoning as completion tokens: paper
Table 10 gives 185,376,127 completion tokens over 22,800 trajectories (8,131 per trajectory,
Matrix) and 11,080,385 over 1,519 (7,294, baseline). Each call draws its completion tokens from a
log-normal (sigma ``LENGTH_SIGMA``) with mean ``ASSISTANT_MEAN_TOKENS`` or ``USER_MEAN_TOKENS``
(never fewer than the visible text); only the visible text is returned. With the troubleshooting
turns above a telecom trajectory has about 29 messages (roughly 20 to 25 model calls); measured over 114 tasks x
3 seeds: 7,863 completion tokens per trajectory in model mode, 8,755 in oracle mode (longer, as
it never stops early); see tests/cases/tau2/test_sim.py. ``max_tokens`` is enforced
with ``apply_limits``. No reply is empty.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from matrix.cases.common import folded, stable_hash
from matrix.cases.tau2 import import_tau2
from matrix.llm.sim.behaviour import Reply, apply_limits, filler_tokens, register_behaviour, request_digest
from matrix.llm.sim.tokens import content_text, count_text_tokens

if TYPE_CHECKING:
    from tau2.data_model.simulation import SimulationRun
    from tau2.data_model.tasks import Task

DOMAINS = ("telecom", "airline", "retail", "mock")
MODES = ("model", "oracle", "nothing")
PAPER_REWARD = 0.59  # paper Table 10, gpt-oss-120b on telecom (0.5918 baseline, 0.5921 Matrix)
# Mean reward of a failed trajectory, measured with tau2's evaluator (see the module docstring).
FAILURE_REWARD = {"telecom": 0.053, "airline": 0.38, "retail": 0.061, "mock": 0.0}
ASSISTANT_MEAN_TOKENS = 520.0
USER_MEAN_TOKENS = 310.0
LENGTH_SIGMA = 0.7
MAX_USER_TURNS = 60  # the user gives up after this many of its own messages
MAX_ASKS = 2  # the assistant asks the user for the same action at most this many times

GREETING_REPLY_PREFIX = "Hi! Here is my situation."
STOP, TRANSFER = "###STOP###", "###TRANSFER###"
CONFIRM_ASK = "Do you confirm that I should proceed (yes/no)?"
CONFIRM_YES = "Yes, I confirm. Please go ahead."
NOTHING_TEXT = "I'm sorry, but I'm not able to help with this request. Is there anything else I can do for you?"
WRAP_UP = "Is there anything else I can help you with today?"
ASK_DETAILS = "Could you please describe your issue and share the details of your account (name, phone number or id)?"
USER_PROBES: tuple[str | tuple[str, dict[str, Any]], ...] = (
    "check_status_bar",
    "check_network_status",
    "check_sim_status",
    "run_speed_test",
    "can_send_mms",
    "check_network_mode_preference",
    "check_data_restriction_status",
    "check_apn_settings",
    "check_wifi_status",
    "check_wifi_calling_status",
    "check_vpn_status",
    "check_installed_apps",
    "check_payment_request",
    ("check_app_permissions", {"app_name": "messaging"}),
    ("check_app_status", {"app_name": "messaging"}),
)
WRITE_PREFIXES = ("get_", "find_", "search_", "list_", "calculate", "think", "check_")

_REQUEST = re.compile(r"run `(?P<name>\w+)` with arguments ")
_REPORT = re.compile(
    r"I ran `(?P<name>\w+)` with arguments (?P<args>\{.*?\})\. It returned:\n<<<\n(?P<out>.*?)\n>>>", re.S
)
_PHONE = re.compile(r"\b\d{3}-\d{3}-\d{4}\b")
_SCENARIO = re.compile(r"<scenario>\n(?P<s>.*)\n</scenario>", re.S)


def _args_key(args: Mapping[str, Any]) -> str:
    return json.dumps(args, sort_keys=True)


# ---------------------------------------------------------------------------------------- the task set


@dataclass(frozen=True)
class Call:
    """A tool call seen in a conversation, with its result (None when none was seen)."""

    name: str
    args: Mapping[str, Any]
    requestor: str
    result: str | None

    def matches(self, action: Any) -> bool:
        return bool(
            self.name == action.name
            and self.requestor == action.requestor
            and _args_key(self.args) == _args_key(action.arguments or {})
        )


def _identity(task: Task) -> tuple[str, ...]:
    """The normalised texts a user states in its opening, from which the assistant matches tasks."""
    instr = task.user_scenario.instructions
    if isinstance(instr, str):
        return (folded(instr),)
    return tuple(folded(x) for x in (instr.reason_for_call, instr.known_info or "") if x)


def opening_text(task: Task) -> str:
    instr = task.user_scenario.instructions
    if isinstance(instr, str):
        return f"{GREETING_REPLY_PREFIX} {instr.strip()}"
    parts = [GREETING_REPLY_PREFIX, instr.reason_for_call.strip()]
    if instr.known_info:
        parts.append(instr.known_info.strip())
    return "\n".join(parts)


def actions_of(task: Task) -> list[Any]:
    crit = task.evaluation_criteria
    return list(crit.actions or []) if crit is not None else []


def communicate_of(task: Task) -> list[str]:
    crit = task.evaluation_criteria
    return list(crit.communicate_info or []) if crit is not None else []


class TaskSet:
    """tau2's tasks of one domain, indexed for both sides, with predicted tool results per task state."""

    def __init__(self, domain: str) -> None:
        if domain not in DOMAINS:
            raise ValueError(f"tau2 behaviour: domain must be one of {', '.join(DOMAINS)}, got {domain!r}")
        registry = import_tau2()
        self.domain = domain
        self.tasks: list[Task] = list(registry.get_tasks_loader(domain)())
        self._env_ctor = registry.get_env_constructor(domain)
        self.by_scenario: dict[str, Task] = {}
        for t in self.tasks:
            self.by_scenario.setdefault(str(t.user_scenario).strip(), t)
        self.identity = {t.id: _identity(t) for t in self.tasks}
        self.order = {t.id: i for i, t in enumerate(self.tasks)}
        self._pristine: dict[str, Any] = {}
        self._cursors: dict[str, tuple[list[tuple[str, str, str]], Any, list[str]]] = {}
        self._lock = threading.RLock()

    @cached_property
    def user_tool_names(self) -> frozenset[str]:
        try:
            return frozenset(t.name for t in self._env_ctor().get_user_tools())
        except Exception:
            return frozenset()

    def candidates(self, user_text: str) -> list[Task]:
        said = folded(user_text)
        return [t for t in self.tasks if all(part in said for part in self.identity[t.id])]

    def outcomes(self, task: Task, calls: Sequence[Call], *, exact: bool = False) -> list[str]:
        """What each of `calls` returns when they are made in order in `task`'s environment.

        The environment is tau2's, set to the task's initial state; every call (read or write,
        either side) is applied, so a prediction sees the writes made before it. One environment
        per task is kept and extended while a conversation grows; a different prefix rebuilds it
        (so does a shorter one with `exact`, which leaves the environment just after `calls`).
        """
        keys = [(c.requestor, c.name, _args_key(c.args)) for c in calls]
        with self._lock:
            applied, env, outs = self._cursors.get(task.id, ([], None, []))
            if env is not None and keys == applied[: len(keys)] and (not exact or len(keys) == len(applied)):
                return outs[: len(keys)]
            if env is None or applied != keys[: len(applied)]:
                applied, env, outs = [], self._fresh(task), []
            for call, key in zip(calls[len(applied) :], keys[len(applied) :], strict=True):
                outs.append(self._call(env, call))
                applied.append(key)
            self._cursors[task.id] = (applied, env, outs)
            return outs[: len(keys)]

    def probe(self, task: Task, calls: Sequence[Call], probe: Call) -> str:
        """What the read-only `probe` would return after `calls` (it is not recorded as made)."""
        with self._lock:
            self.outcomes(task, calls, exact=True)
            _, env, _ = self._cursors[task.id]
            return self._call(env, probe)

    def _fresh(self, task: Task) -> Any:
        pristine = self._pristine.get(task.id)
        if pristine is None:
            pristine = self._env_ctor()
            init = task.initial_state
            pristine.set_state(
                init.initialization_data if init else None, init.initialization_actions if init else None, []
            )
            self._pristine[task.id] = pristine
        return copy.deepcopy(pristine)

    @staticmethod
    def _call(env: Any, call: Call) -> str:
        from tau2.data_model.message import ToolCall

        tc = ToolCall(id="probe", name=call.name, arguments=dict(call.args), requestor=call.requestor)
        return str(env.get_response(tc).content)


_TASKSETS: dict[str, TaskSet] = {}
_TASKSETS_LOCK = threading.Lock()


def task_set(domain: str) -> TaskSet:
    """The task set of `domain`, loaded once per process."""
    with _TASKSETS_LOCK:
        ts = _TASKSETS.get(domain)
        if ts is None:
            ts = _TASKSETS[domain] = TaskSet(domain)
        return ts


def default_competence(domain: str) -> float:
    """The competence that makes E[reward] = PAPER_REWARD, given the domain's failure reward."""
    f = FAILURE_REWARD.get(domain, 0.0)
    return min(1.0, max(0.0, (PAPER_REWARD - f) / (1.0 - f)))


# ------------------------------------------------------------------------------------- conversation


def _calls_of(message: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for tc in message.get("tool_calls") or []:
        fn = tc.get("function") or {}
        raw = fn.get("arguments") or "{}"
        try:
            args = json.loads(raw) if isinstance(raw, str) else dict(raw)
        except json.JSONDecodeError:
            args = {}
        out.append((str(tc.get("id")), str(fn.get("name")), args if isinstance(args, dict) else {}))
    return out


def _results(messages: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    return {str(m.get("tool_call_id")): content_text(m.get("content")) for m in messages if m.get("role") == "tool"}


def report_text(name: str, args: Mapping[str, Any], result: str) -> str:
    return f"I ran `{name}` with arguments {json.dumps(args, sort_keys=True)}. It returned:\n<<<\n{result}\n>>>"


def request_text(name: str, args: Mapping[str, Any]) -> str:
    return f"run `{name}` with arguments {json.dumps(args, sort_keys=True)}"


def parse_requests(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Every ``run `name` with arguments {json}`` in an assistant's text."""
    found = []
    decoder = json.JSONDecoder()
    for m in _REQUEST.finditer(text):
        try:
            args, _ = decoder.raw_decode(text, m.end())
        except json.JSONDecodeError:
            continue
        if isinstance(args, dict):
            found.append((m.group("name"), args))
    return found


def assistant_events(chat: Sequence[Mapping[str, Any]]) -> list[Call]:
    """The tool calls in the assistant's view: its own (with results) and the user's reported ones."""
    results = _results(chat)
    events: list[Call] = []
    for m in chat:
        role = m.get("role")
        if role == "assistant":
            for cid, name, args in _calls_of(m):
                events.append(Call(name, args, "assistant", results.get(cid)))
        elif role == "user":
            for r in _REPORT.finditer(content_text(m.get("content"))):
                try:
                    args = json.loads(r.group("args"))
                except json.JSONDecodeError:
                    continue
                events.append(Call(r.group("name"), args, "user", r.group("out")))
    return events


# ----------------------------------------------------------------------------------------- behaviour


@dataclass
class _Plan:
    """The assistant's reading of the conversation."""

    task: Task | None
    done: int = 0
    agreed: bool = False
    probe: Call | None = None
    extra: dict[str, int] = field(default_factory=dict)


class Tau2Behaviour:
    """gpt-oss-120b as tau2's user simulator and assistant (see the module docstring).

    `domain`: tau2 domain of the configured task set. `mode`: model, oracle or nothing.
    `competence`: chance that a trajectory follows the reference in model mode (None: the domain's
    default, E[reward] = 0.59). `assistant_mean_tokens`, `user_mean_tokens`, `sigma`: the per-call
    completion-token log-normals (hidden reasoning included). `seed_salt`: varies model-mode outcomes
    without changing seeds.
    """

    name = "tau2"

    def __init__(
        self,
        domain: str = "telecom",
        mode: str = "model",
        competence: float | None = None,
        assistant_mean_tokens: float = ASSISTANT_MEAN_TOKENS,
        user_mean_tokens: float = USER_MEAN_TOKENS,
        sigma: float = LENGTH_SIGMA,
        seed_salt: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"tau2 behaviour: mode must be one of {', '.join(MODES)}, got {mode!r}")
        if competence is not None and not 0.0 <= competence <= 1.0:
            raise ValueError(f"tau2 behaviour: competence is a probability, got {competence}")
        if assistant_mean_tokens <= 0 or user_mean_tokens <= 0 or sigma < 0:
            raise ValueError(
                "tau2 behaviour: need mean tokens > 0 and sigma >= 0, got "
                f"{assistant_mean_tokens}, {user_mean_tokens}, {sigma}"
            )
        self.domain = domain
        self.mode = mode
        self.competence = default_competence(domain) if competence is None else float(competence)
        self.assistant_mean_tokens = float(assistant_mean_tokens)
        self.user_mean_tokens = float(user_mean_tokens)
        self.sigma = float(sigma)
        self.seed_salt = int(seed_salt)
        self.tasks = task_set(domain)

    # ------------------------------------------------------------------------------------- dispatch

    def reply(self, request: Mapping[str, Any], *, seed: int) -> Reply:
        messages = [m for m in request.get("messages") or [] if isinstance(m, Mapping)]
        system = content_text(messages[0].get("content")) if messages and messages[0].get("role") == "system" else ""
        req_seed = request.get("seed")
        traj_seed = req_seed if isinstance(req_seed, int) and not isinstance(req_seed, bool) else seed
        digest = request_digest(request, seed)
        tools = {
            str((t.get("function") or {}).get("name"))
            for t in request.get("tools") or []
            if isinstance(t, Mapping) and t.get("type", "function") == "function"
        }
        scenario = _SCENARIO.search(system)
        if scenario is not None:
            text, call = self._user(scenario.group("s").strip(), messages[1:], tools)
            mean = self.user_mean_tokens
        else:
            text, call = self._assistant(messages[1:], tools, traj_seed)
            mean = self.assistant_mean_tokens
        reply = self._reply(text, call, digest, mean)
        limit = request.get("max_tokens") or request.get("max_completion_tokens")
        return apply_limits(reply, max_tokens=limit if isinstance(limit, int) else None, seed=digest)

    def _reply(self, text: str | None, call: tuple[str, Mapping[str, Any]] | None, digest: int, mean: float) -> Reply:
        rng = random.Random(digest)
        mu = math.log(mean) - self.sigma**2 / 2
        hidden = round(rng.lognormvariate(mu, self.sigma)) if self.sigma else round(mean)
        if call is not None:
            name, args = call
            tc = {
                "id": f"call_{digest:016x}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            visible = count_text_tokens(json.dumps(tc["function"])) + 3
            return Reply(None, max(hidden, visible), "tool_calls", (tc,), self._reasoning(rng, hidden - visible))
        body = text if text and text.strip() else WRAP_UP
        visible = count_text_tokens(body)
        return Reply(body, max(hidden, visible), "stop", (), self._reasoning(rng, hidden - visible))

    def _reasoning(self, rng: random.Random, tokens: int) -> str | None:
        """gpt-oss returns its reasoning beside the answer (vLLM's `reasoning_content`): filler text of the
        hidden tokens' length, so that stored trajectories weigh what real ones weigh."""
        return filler_tokens(rng, tokens) if tokens > 0 else None

    # ----------------------------------------------------------------------------------------- user

    def _user(
        self, scenario: str, chat: Sequence[Mapping[str, Any]], tools: set[str]
    ) -> tuple[str | None, tuple[str, Mapping[str, Any]] | None]:
        task = self.tasks.by_scenario.get(scenario)
        if task is None:
            task = next((t for t in self.tasks.tasks if str(t.user_scenario).strip() in scenario), None)
        own = [m for m in chat if m.get("role") == "assistant"]
        if not chat:
            return (opening_text(task) if task else f"Hi. {STOP}"), None
        last = chat[-1]
        if last.get("role") == "tool":
            trailing: list[Mapping[str, Any]] = []
            for m in reversed(chat):
                if m.get("role") != "tool":
                    break
                trailing.insert(0, m)
            calls = {cid: (name, args) for m in own[-1:] for cid, name, args in _calls_of(m)}
            parts = []
            for m in trailing:
                name, args = calls.get(str(m.get("tool_call_id")), ("tool", {}))
                parts.append(report_text(name, args, content_text(m.get("content"))))
            return "\n\n".join(parts), None
        said = content_text(last.get("content"))
        if len(own) >= MAX_USER_TURNS:
            return f"I have to go now, thanks. {STOP}", None
        requests = parse_requests(said)
        if requests:
            name, args = requests[0]
            if name in tools:
                return None, (name, args)
            return f"Sorry, I can't do `{name}` myself; I don't have a way to do that.", None
        if CONFIRM_ASK in said:
            return CONFIRM_YES, None
        opened = task is not None and any(opening_text(task) in content_text(m.get("content")) for m in own)
        if task is not None and (ASK_DETAILS in said or not opened):
            return opening_text(task), None
        if "transfer" in said.casefold():
            return f"Okay, I'll wait for the human agent. {TRANSFER}", None
        return f"Thank you for your help, that's all. {STOP}", None

    # ------------------------------------------------------------------------------------ assistant

    def _assistant(
        self, chat: Sequence[Mapping[str, Any]], tools: set[str], traj_seed: int
    ) -> tuple[str | None, tuple[str, Mapping[str, Any]] | None]:
        if self.mode == "nothing":
            return NOTHING_TEXT, None
        user_text = "\n".join(content_text(m.get("content")) for m in chat if m.get("role") == "user")
        candidates = self.tasks.candidates(user_text)
        asked = sum(1 for m in chat if m.get("role") == "assistant" and ASK_DETAILS in content_text(m.get("content")))
        if not candidates:
            if asked:
                return f"I'm sorry, I could not find what you need. {WRAP_UP}", None
            return ASK_DETAILS, None
        events = assistant_events(chat)

        lookup = self._lookup(events, user_text, tools)
        if lookup is not None:
            return None, lookup
        plan = self._plan(candidates, events)
        if plan.probe is not None:
            p = plan.probe
            if p.requestor == "assistant":
                return None, (p.name, p.args)
            return f"To narrow this down, could you please {request_text(p.name, p.args)} on your phone?", None
        task = plan.task
        assert task is not None
        actions = actions_of(task)
        stop_at = len(actions)
        if self.mode == "model" and plan.agreed and actions:
            h = random.Random(stable_hash(task.id, traj_seed, self.seed_salt, self.domain))
            if h.random() >= self.competence:
                stop_at = h.randrange(len(actions))
        if plan.done >= stop_at:
            info = communicate_of(task) if stop_at == len(actions) else []
            body = " ".join(info)
            if actions and actions[-1].name == "transfer_to_human_agents" and stop_at == len(actions):
                return f"YOU ARE BEING TRANSFERRED TO A HUMAN AGENT. PLEASE HOLD ON. {body}".strip(), None
            head = "Everything should be sorted out now." if not info else "Here is the information you asked for:"
            return f"{head} {body} {WRAP_UP}".replace("  ", " ").strip(), None
        action = actions[plan.done]
        if self._needs_confirmation(chat, action):
            return f"I can {action.name.replace('_', ' ')} for you. {CONFIRM_ASK}", None
        if action.requestor == "assistant":
            return None, (action.name, dict(action.arguments or {}))
        times = sum(
            1
            for m in chat
            if m.get("role") == "assistant"
            and request_text(action.name, action.arguments or {}) in content_text(m.get("content"))
        )
        if times >= MAX_ASKS:
            return f"It seems we cannot complete this step. {WRAP_UP}", None
        return (
            f"Next, please {request_text(action.name, action.arguments or {})} on your phone and tell me what happens.",
            None,
        )

    def _needs_confirmation(self, chat: Sequence[Mapping[str, Any]], action: Any) -> bool:
        if self.domain not in ("airline", "retail") or action.requestor != "assistant":
            return False
        if action.name.startswith(WRITE_PREFIXES) or action.name == "transfer_to_human_agents":
            return False
        return not any(m.get("role") == "assistant" and CONFIRM_ASK in content_text(m.get("content")) for m in chat)

    def _lookup(self, events: Sequence[Call], user_text: str, tools: set[str]) -> tuple[str, dict[str, Any]] | None:
        """Telecom's customer lookup: by the caller's phone, then their lines until the caller's line."""
        if self.domain != "telecom" or "get_customer_by_phone" not in tools:
            return None
        phones = _PHONE.findall(user_text)
        if not phones:
            return None
        found = [e for e in events if e.name == "get_customer_by_phone"]
        if not found:
            return "get_customer_by_phone", {"phone_number": phones[0]}
        try:
            customer = json.loads(found[0].result or "")
        except json.JSONDecodeError:
            return None
        seen = {e.args.get("id") for e in events if e.name == "get_details_by_id"}
        for e in events:
            if e.name == "get_details_by_id" and phones[0] in (e.result or ""):
                return None
        for line in customer.get("line_ids") or [] if isinstance(customer, dict) else []:
            if line not in seen and "get_details_by_id" in tools:
                return "get_details_by_id", {"id": line}
        return None

    def _plan(self, candidates: list[Task], events: Sequence[Call]) -> _Plan:
        progress = {t.id: self._progress(t, events) for t in candidates}

        def remaining(t: Task) -> str:
            rest = actions_of(t)[progress[t.id] :]
            return json.dumps([[a.requestor, a.name, a.arguments] for a in rest] + [communicate_of(t)], sort_keys=True)

        if len({remaining(t) for t in candidates}) == 1:
            return _Plan(candidates[0], progress[candidates[0].id], agreed=True)
        alive = [t for t in candidates if self._consistent(t, events)] or candidates[:1]
        if len({remaining(t) for t in alive}) == 1:
            return _Plan(alive[0], progress[alive[0].id], agreed=True)
        nexts = {self._next_key(t, progress[t.id]) for t in alive}
        if len(nexts) == 1 and None not in nexts:
            return _Plan(alive[0], progress[alive[0].id])
        probe = self._best_probe(alive, events)
        if probe is None:
            return _Plan(alive[0], progress[alive[0].id])
        return _Plan(None, probe=probe)

    def _next_key(self, task: Task, done: int) -> str | None:
        actions = actions_of(task)
        if done >= len(actions):
            return None
        a = actions[done]
        return json.dumps([a.requestor, a.name, a.arguments], sort_keys=True)

    @staticmethod
    def _progress(task: Task, events: Sequence[Call]) -> int:
        actions = actions_of(task)
        k = 0
        for e in events:
            if k < len(actions) and e.matches(actions[k]):
                k += 1
        return k

    def _consistent(self, task: Task, events: Sequence[Call]) -> bool:
        predicted = self.tasks.outcomes(task, events)
        return all(e.result is None or e.result == p for e, p in zip(events, predicted, strict=True))

    def _best_probe(self, alive: Sequence[Task], events: Sequence[Call]) -> Call | None:
        probes = [(p, {}) if isinstance(p, str) else p for p in USER_PROBES]
        best, best_split = None, 1
        for name, args in probes:
            if name not in self.tasks.user_tool_names:
                continue
            probe = Call(name, args, "user", None)
            split = len({self.tasks.probe(t, events, probe) for t in alive})
            if split > best_split:
                best, best_split = probe, split
        return best


register_behaviour("tau2", Tau2Behaviour)


# ----------------------------------------------------------------------------------- offline driver


def simulate_trajectory(
    domain: str,
    task: Task,
    behaviour: Tau2Behaviour,
    seed: int = 300,
    *,
    max_steps: int = 200,
    evaluate: bool = True,
) -> SimulationRun:
    """Run one tau2 task with tau2's own agent, user simulator and orchestrator, all served by `behaviour`.

    litellm's `completion` inside tau2 is replaced, for the duration of the call, by a function that
    hands the request body tau2 built to `behaviour` and wraps its reply as a litellm response. The
    returned run has its messages and, with `evaluate`, tau2's reward (`reward_info`,
    EvaluationType.ALL). Not thread-safe: it patches a module attribute.
    """
    import litellm
    import tau2.utils.llm_utils as llm_utils
    from tau2.environment.tool import Tool
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation

    def completion(**body: Any) -> Any:
        body.pop("num_retries", None)
        reply = behaviour.reply(body, seed=int(body.get("seed") or 0))
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = [dict(tc) for tc in reply.tool_calls]
        return litellm.ModelResponse(
            id="sim",
            model=str(body.get("model")),
            choices=[{"index": 0, "finish_reason": reply.finish_reason, "message": message}],
            usage={
                "prompt_tokens": 0,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.completion_tokens,
            },
        )

    saved = llm_utils.completion, llm_utils.get_response_cost, Tool.openai_schema
    llm_utils.completion, llm_utils.get_response_cost = completion, lambda response: 0.0
    Tool.openai_schema = property(_cached_schema)
    try:
        run = _run(domain, task, seed, max_steps)
    finally:
        llm_utils.completion, llm_utils.get_response_cost, Tool.openai_schema = saved
    if evaluate:
        run.reward_info = evaluate_simulation(
            simulation=run, task=task, evaluation_type=EvaluationType.ALL, solo_mode=False, domain=domain
        )
    return run


_SCHEMAS: dict[tuple[str, int], tuple[Any, dict[str, Any]]] = {}


def _cached_schema(tool: Any) -> dict[str, Any]:
    """tau2's `Tool.openai_schema`, built once per tool (tau2 rebuilds every tool's schema on every call)."""
    key = (tool.name, id(tool.params))
    hit = _SCHEMAS.get(key)
    if hit is None:
        schema = {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool._get_description(),
                "parameters": tool.params.model_json_schema(),
            },
        }
        hit = _SCHEMAS[key] = (tool.params, schema)  # holding params keeps its id from being reused
    return copy.deepcopy(hit[1])


def _run(domain: str, task: Task, seed: int, max_steps: int) -> SimulationRun:
    """tau2's run_task without its evaluation (the caller evaluates, or not)."""
    from tau2.agent.llm_agent import LLMAgent
    from tau2.orchestrator.orchestrator import Orchestrator
    from tau2.user.user_simulator import UserSimulator

    registry = import_tau2()
    environment = registry.get_env_constructor(domain)()
    agent = LLMAgent(
        tools=environment.get_tools(),
        domain_policy=environment.get_policy(),
        llm="tau2-sim",
        llm_args={"temperature": 1.0},
    )
    try:
        user_tools = environment.get_user_tools()
    except Exception:
        user_tools = None
    user = UserSimulator(
        tools=user_tools, instructions=str(task.user_scenario), llm="tau2-sim", llm_args={"temperature": 1.0}
    )
    orchestrator = Orchestrator(
        domain=domain,
        agent=agent,
        user=user,
        environment=environment,
        task=task,
        max_steps=max_steps,
        seed=seed,
    )
    return orchestrator.run()


__all__ = [
    "DOMAINS",
    "MODES",
    "Call",
    "TaskSet",
    "Tau2Behaviour",
    "default_competence",
    "opening_text",
    "parse_requests",
    "report_text",
    "request_text",
    "simulate_trajectory",
    "task_set",
]
