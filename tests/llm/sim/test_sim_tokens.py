"""The tokenizer approximation: cheap, deterministic, and close to Llama 3 on English."""

from __future__ import annotations

import pytest

from matrix.llm.sim.tokens import (
    count_chat_tokens,
    count_prompt_tokens,
    count_text_tokens,
    split_text,
    token_pieces,
    truncate_tokens,
)

PROSE = (
    "A research team is studying how traffic flows through a small city over one week. They "
    "collected counts of cars, buses and bicycles at twelve intersections every fifteen minutes."
)


def test_english_prose_is_about_four_characters_a_token() -> None:
    assert count_text_tokens("The quick brown fox jumps over the lazy dog.") == 10  # as Llama 3
    assert 3.5 <= len(PROSE) / count_text_tokens(PROSE) <= 6.0


def test_numbers_split_in_groups_of_three_and_dense_scripts_per_character() -> None:
    assert count_text_tokens("1234567") == 3
    assert count_text_tokens("日本語") == 3
    assert count_text_tokens("") == 0


@pytest.mark.parametrize("text", [PROSE, "internationalization!!!  \n\n x = 12345;", "日本語 and ascii", ""])
def test_pieces_and_chunks_join_back_to_the_text(text: str) -> None:
    pieces = token_pieces(text)
    assert "".join(pieces) == text
    assert len(pieces) == count_text_tokens(text)
    for n in (1, 3, 50):
        chunks = split_text(text, n)
        assert len(chunks) == n and "".join(chunks) == text
    assert count_text_tokens(truncate_tokens(PROSE, 5)) == 5


def test_chat_template_overhead_is_counted() -> None:
    user = {"role": "user", "content": "Hello there"}
    bare = count_chat_tokens([user])
    assert bare == count_text_tokens("Hello there") + 1 + 18 + 4 + 5 + 5
    with_system = count_chat_tokens([{"role": "system", "content": "Be brief."}, user])
    assert with_system == bare + count_text_tokens("Be brief.")
    parts = count_chat_tokens([{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}])
    assert parts == bare
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    assert count_chat_tokens([user], tools) > bare + 40


def test_completion_prompts() -> None:
    assert count_prompt_tokens("Hello there") == 1 + count_text_tokens("Hello there")
    assert count_prompt_tokens([1, 2, 3]) == 3


def test_underscores_count_and_split_like_other_punctuation() -> None:
    text = '{"problem_completeness": 1, "snake_case_key": 2}'
    n = count_text_tokens(text)
    pieces = token_pieces(text)
    assert len(pieces) == n and "".join(pieces) == text
    assert count_text_tokens("a_b") == 3 and all(pieces)  # no empty streamed chunks
