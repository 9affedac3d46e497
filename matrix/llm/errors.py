"""Errors the LLM client raises. Each names the endpoint, the status and what the server said."""

from __future__ import annotations


class LLMError(RuntimeError):
    """A request to an OpenAI-compatible endpoint failed."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.attempts = attempts


class LLMRequestError(LLMError):
    """The server refused the request itself (a 4xx input error): retrying cannot help."""


class LLMUnavailableError(LLMError):
    """The request still failed after every retry (429, 5xx, timeouts, dropped connections)."""
