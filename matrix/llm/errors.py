"""Errors the LLM client raises. Each names the endpoint, the status and what the server said.

Every error also carries a short `reason`, one of a small fixed vocabulary, so that failures can be
counted by kind (the client's `stats()`, and a run's error counts) without parsing messages:

- `http_<status>`: the server answered with that status (`http_429`, `http_503`, `http_400`, ...);
- `timeout`: no complete answer within the request timeout (a hung or overloaded server);
- `connection`: the connection could not be opened, or was closed before the reply began;
- `truncated`: the connection was closed in the middle of the reply body;
- `bad_json`: the body is not JSON;
- `bad_reply`: the body is JSON but not the expected shape (not an object, no `choices`);
- `too_large`: the body is larger than the client accepts.
"""

from __future__ import annotations

REASONS = ("timeout", "connection", "truncated", "bad_json", "bad_reply", "too_large")


def http_reason(status: int) -> str:
    return f"http_{status}"


class LLMError(RuntimeError):
    """A request to an OpenAI-compatible endpoint failed."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        status: int | None = None,
        attempts: int = 1,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.attempts = attempts
        self.reason = reason or (http_reason(status) if status is not None else "error")


class LLMRequestError(LLMError):
    """The server refused the request itself (a 4xx input error): retrying cannot help."""


class LLMUnavailableError(LLMError):
    """The request still failed after every retry (429, 5xx, timeouts, dropped connections, bad replies)."""
