"""The simulated serving engine: a calibrated continuous-batching GPU replica behind an OpenAI API.

- `profile`: hardware/model profiles (YAML) and the step-time model;
- `core`: the synchronous discrete-event scheduler (vLLM V1 style), usable in virtual time;
- `loadgen`: virtual-time benchmark clients (closed loop, burst) over the core;
- `engine`: the core driven in scaled real time by asyncio, per-request token streams;
- `tokens`: the tokenizer approximation; `behaviour`: pluggable reply models;
- `server`: the aiohttp OpenAI-compatible server; `replicas`: many servers as Ray actors;
- `calibration`: the fit against published serving figures.

Every response, timing and metric produced here is labelled simulated.
"""

from matrix.llm.sim.behaviour import (
    BehaviourModel,
    GenericBehaviour,
    Reply,
    UnknownBehaviourError,
    get_behaviour,
    list_behaviours,
    register_behaviour,
)
from matrix.llm.sim.core import EngineCore, StepResult
from matrix.llm.sim.engine import SimEngine, SimTiming
from matrix.llm.sim.profile import SimProfile, UnknownProfileError, list_profiles, load_profile

__all__ = [
    "BehaviourModel",
    "EngineCore",
    "GenericBehaviour",
    "Reply",
    "SimEngine",
    "SimProfile",
    "SimTiming",
    "StepResult",
    "UnknownBehaviourError",
    "UnknownProfileError",
    "get_behaviour",
    "list_behaviours",
    "list_profiles",
    "load_profile",
    "register_behaviour",
]
