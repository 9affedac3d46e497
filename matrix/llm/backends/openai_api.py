"""`openai`: any external OpenAI-compatible API (OpenAI, Azure OpenAI, Gemini's OpenAI endpoint, a proxy).

Nothing is started. The backend resolves the base URL and the key's environment variable, checks
once that `{base_url}/models` answers with that key, and hands back a `Server` whose `info` names the
variable (never the key itself), so that the client reads the key from the environment on its own
and no log, config dump or result file ever holds it.

`list_models` is also the health probe the Ray Serve backends use on their proxies.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from typing import Any

from matrix.llm.backends.base import Backend, BackendError, Pool, PoolSet, PoolSpec, Server

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class ModelsProbeError(BackendError):
    """`GET {base_url}/models` failed; `status` is the HTTP code, or None when nothing answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def list_models(base_url: str, *, api_key: str | None = None, timeout: float = 10.0) -> list[str]:
    """The model ids that `GET {base_url}/models` lists.

    Raises `ModelsProbeError` naming the URL when nothing answers, the answer is not HTTP 200, or
    the body is not an OpenAI model list. The key, if any, goes only into the request header.
    """
    url = base_url.rstrip("/") + "/models"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        hint = " (check the API key)" if exc.code in (401, 403) else ""
        raise ModelsProbeError(f"GET {url} answered HTTP {exc.code}{hint}", status=exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelsProbeError(f"could not reach {url}: {reason}") from None
    try:
        payload: Any = json.loads(body)
        return [str(item["id"]) for item in payload["data"]]
    except (ValueError, KeyError, TypeError):
        raise ModelsProbeError(f"GET {url} did not return an OpenAI model list: {body[:200]!r}", status=200) from None


class OpenAIBackend(Backend):
    """An external OpenAI-compatible API; `start` only resolves and checks it, `stop` does nothing."""

    name = "openai"

    def start(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        base_url: str | None = None,
        model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        check: bool = True,
        timeout: float = 10.0,
        **options: Any,
    ) -> Server:
        """Resolve the endpoint and, with `check`, confirm it answers `GET /models` with the key.

        `base_url` comes from the argument, else `OPENAI_BASE_URL`, else the OpenAI API. `host` and
        `port` are part of the shared interface and unused here: nothing listens locally.
        """
        if options:
            raise BackendError(
                f"backend 'openai' got unknown option(s) {sorted(options)}; it takes base_url, model, "
                "api_key_env, check, timeout"
            )
        url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise BackendError(f"backend 'openai': base_url must start with http:// or https://, got {url!r}")
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise BackendError(
                f"backend 'openai' reads its API key from the environment variable {api_key_env}, "
                f"which is not set; export {api_key_env}=... (or pass api_key_env= to name another)"
            )
        models: list[str] | None = None
        if check:
            try:
                models = list_models(url, api_key=api_key, timeout=timeout)
            except ModelsProbeError as exc:
                raise BackendError(f"backend 'openai' health check failed: {exc}") from None
        resolved = model
        if resolved is None:
            if models is not None and len(models) == 1:
                resolved = models[0]
            else:
                listed = f"; {url}/models lists {', '.join(models[:8])}" if models else ""
                raise BackendError(f"backend 'openai' needs model= (which model to request){listed}")
        elif models is not None and resolved not in models:
            logger.warning("model %r is not in the list %s/models returned; requests may fail", resolved, url)
        info: dict[str, Any] = {"api_key_env": api_key_env, "checked": check}
        if models is not None:
            info["models"] = models
            info["model_listed"] = resolved in models
        return Server(backend=self.name, base_url=url, model=resolved, info=info)

    def start_pools(
        self,
        specs: list[PoolSpec],
        *,
        base_url: str | None = None,
        model: str | None = None,
        models: dict[str, str] | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        check: bool = True,
        timeout: float = 10.0,
        **options: Any,
    ) -> PoolSet:
        """Every pool points at the one external endpoint, checked once before anything runs.

        `model` is what every pool requests; `models` maps a pool name to another model (e.g. a
        cheaper one for NaturalReasoning's filter). The key stays in the environment: only the
        variable's name is recorded. Replica counts and serving options of the specs do not apply.
        """
        if options:
            raise BackendError(
                f"backend 'openai' got unknown option(s) {sorted(options)}; it takes base_url, model, models, "
                "api_key_env, check, timeout"
            )
        models = dict(models or {})
        unknown = sorted(set(models) - {s.name for s in specs})
        if unknown:
            raise BackendError(
                f"backend 'openai': models names pool(s) {unknown}; this workload's pools are {[s.name for s in specs]}"
            )
        server = self.start(base_url=base_url, model=model, api_key_env=api_key_env, check=check, timeout=timeout)
        listed = server.info.get("models")
        pools: dict[str, Pool] = {}
        for spec in specs:
            chosen = models.get(spec.name, server.model)
            if listed is not None and chosen not in listed:
                logger.warning(
                    "model %r (pool %s) is not in %s/models; requests may fail", chosen, spec.name, server.base_url
                )
            pools[spec.name] = Pool(
                name=spec.name,
                urls=[server.base_url],
                model=chosen,
                backend=self.name,
                hardware=f"external API at {server.base_url}",
                info={"api_key_env": api_key_env, "checked": check},
            )
        return PoolSet(pools, [])


__all__ = ["DEFAULT_BASE_URL", "ModelsProbeError", "OpenAIBackend", "list_models"]
