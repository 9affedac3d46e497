"""A cheap, deterministic stand-in for the Llama-3 tokenizer.

The simulated engine needs token counts (they set prefill cost, KV use and `usage`), not token ids,
and it must not download a tokenizer. Text is cut into word pieces the way byte-level BPE
pre-tokenisers do (an optional leading space plus a run of letters, up to three digits, a run of
punctuation, a run of whitespace) and each piece costs:

- letters: one token per 8 characters (most English words are one token in a 128k vocabulary);
  letters outside ASCII one token per character (CJK and similar are dense);
- digits: one token per group of up to three (Llama 3 splits numbers that way);
- punctuation: one token per 3 characters; whitespace runs: one token.

On English prose this lands within about 10% of the real tokenizer (about 4 characters a token).
Chat requests add Llama 3.1's template overhead: the begin-of-text token, a header and an
end-of-turn token per message, the default system preamble (knowledge cut-off and date) and the
assistant header that opens the reply.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_PIECE = re.compile(r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d{1,3}| ?(?:[^\s\w]|_)+|\s+", re.UNICODE)

BOS_TOKENS = 1
MESSAGE_OVERHEAD_TOKENS = 5  # <|start_header_id|> role <|end_header_id|> "\n\n" ... <|eot_id|>
SYSTEM_PREAMBLE_TOKENS = 18  # "Cutting Knowledge Date: December 2023\nToday Date: ...\n\n"
GENERATION_PROMPT_TOKENS = 4  # <|start_header_id|> assistant <|end_header_id|> "\n\n"
TOOLS_PREAMBLE_TOKENS = 40  # the template's instructions around the tool definitions


@functools.lru_cache(maxsize=1 << 16)  # pieces repeat (words): a hit costs far less than the rules
def _piece_tokens(piece: str) -> int:
    body = piece.lstrip(" ") or piece
    first = body[0]
    if first.isspace():
        return 1
    if first.isdigit():
        return 1
    if first.isalpha() or first == "'":
        if body.isascii():
            return 1 + (len(body) - 1) // 8
        return len(body)
    return 1 + (len(body) - 1) // 3


_COUNTS: dict[int, int] = {}
_COUNTS_MAX = 1 << 19  # remembered texts (an int pair each); the memo starts over when full


def count_text_tokens(text: str) -> int:
    """Approximate Llama-3 token count of plain text (no special tokens).

    Counts are remembered by the text's hash: a conversation's history is counted again on every
    request that carries it, and a virtual-clock run sends millions of those.
    """
    if len(text) < 64:
        return sum(map(_piece_tokens, _PIECE.findall(text)))
    key = hash(text)
    n = _COUNTS.get(key)
    if n is None:
        n = sum(map(_piece_tokens, _PIECE.findall(text)))
        if len(_COUNTS) >= _COUNTS_MAX:
            _COUNTS.clear()
        _COUNTS[key] = n
    return n


def token_pieces(text: str) -> list[str]:
    """Cut `text` into exactly `count_text_tokens(text)` strings that join back to `text`."""
    out: list[str] = []
    for m in _PIECE.finditer(text):
        piece = m.group()
        n = _piece_tokens(piece)
        if n == 1:
            out.append(piece)
            continue
        size = -(-len(piece) // n)
        parts = [piece[i : i + size] for i in range(0, len(piece), size)]
        while len(parts) < n:  # rounding left fewer parts than tokens: split the longest
            j = max(range(len(parts)), key=lambda k: len(parts[k]))
            if len(parts[j]) < 2:
                parts.append("")
                continue
            half = len(parts[j]) // 2
            parts[j : j + 1] = [parts[j][:half], parts[j][half:]]
        out += [*parts[: n - 1], "".join(parts[n - 1 :])]
    # characters the regex does not cover (none expected) would be lost: keep the join exact
    if "".join(out) != text:
        return [text]
    return out


def split_text(text: str, n: int) -> list[str]:
    """`n` consecutive chunks of `text` (for streaming `n` tokens); empty strings pad a short text."""
    if n <= 0:
        return []
    atoms = token_pieces(text) if text else []
    if len(atoms) <= n:
        return atoms + [""] * (n - len(atoms))
    chunks: list[str] = []
    for i in range(n):
        lo = i * len(atoms) // n
        hi = (i + 1) * len(atoms) // n
        chunks.append("".join(atoms[lo:hi]))
    return chunks


def truncate_tokens(text: str, n: int) -> str:
    """The first `n` tokens of `text`."""
    return "".join(token_pieces(text)[: max(n, 0)])


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return str(content)


def count_message_tokens(message: Mapping[str, Any]) -> int:
    """One chat message inside the template: header, content, tool calls, end of turn."""
    n = MESSAGE_OVERHEAD_TOKENS + count_text_tokens(content_text(message.get("content")))
    calls = message.get("tool_calls")
    if calls:
        n += count_text_tokens(json.dumps(calls, sort_keys=True))
    return n


def count_chat_tokens(messages: Iterable[Mapping[str, Any]], tools: Sequence[Any] | None = None) -> int:
    """Prompt tokens of a chat request as Llama 3.1's chat template would lay it out."""
    msgs = list(messages)
    n = BOS_TOKENS + SYSTEM_PREAMBLE_TOKENS + GENERATION_PROMPT_TOKENS
    if not any(m.get("role") == "system" for m in msgs):
        n += MESSAGE_OVERHEAD_TOKENS  # the template opens a system turn for its preamble anyway
    n += sum(count_message_tokens(m) for m in msgs)
    if tools:
        n += TOOLS_PREAMBLE_TOKENS + count_text_tokens(json.dumps(list(tools), sort_keys=True))
    return n


def chat_prefix_chain(
    messages: Iterable[Mapping[str, Any]], tools: Sequence[Any] | None = None
) -> list[tuple[str, int]]:
    """The prompt as a chain of prefix keys, for the engine's prefix cache.

    One entry per chat message: a key that names the whole prompt up to and including that
    message (the tools and template preamble come first), and the prompt tokens up to its end,
    counted as `count_chat_tokens` counts them. Two requests share a cached prefix exactly as far
    as their messages agree.
    """
    msgs = list(messages)
    start = BOS_TOKENS + SYSTEM_PREAMBLE_TOKENS
    if not any(m.get("role") == "system" for m in msgs):
        start += MESSAGE_OVERHEAD_TOKENS
    if tools:
        start += TOOLS_PREAMBLE_TOKENS + count_text_tokens(json.dumps(list(tools), sort_keys=True))
    digest = hashlib.blake2b(json.dumps(list(tools or []), sort_keys=True, default=str).encode(), digest_size=16)
    chain: list[tuple[str, int]] = []
    upto = start
    for m in msgs:
        digest = digest.copy()
        digest.update(json.dumps(m, sort_keys=True, default=str).encode())
        upto += count_message_tokens(m)
        chain.append((digest.hexdigest(), upto))
    return chain


def count_prompt_tokens(prompt: str | Sequence[int]) -> int:
    """A completions prompt: text (plus begin-of-text), or a list of token ids taken as is."""
    if isinstance(prompt, str):
        return BOS_TOKENS + count_text_tokens(prompt)
    return len(prompt)
