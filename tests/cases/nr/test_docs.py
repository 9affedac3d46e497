"""The offline web-document generator for the NaturalReasoning case (no Ray, no network)."""

from __future__ import annotations

import gzip
import json
import re
import statistics
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import py3langid
import pytest
import zstandard

from matrix.cases.nr import docs as nr_docs
from matrix.cases.nr.docs import KINDS, LANGUAGES, generate_documents, main, write_documents

N = 3000
CJK = ("zh", "ja")


@cache
def _docs(n: int = N, seed: int = 0, mean_words: float = 700.0) -> tuple[dict[str, Any], ...]:
    return tuple(generate_documents(n, seed=seed, mean_words=mean_words))


def _words(doc: dict[str, Any]) -> int:
    return len(doc["text"].split())


def test_deterministic_and_seed_dependent() -> None:
    a = generate_documents(200, seed=7)
    b = generate_documents(200, seed=7)
    c = generate_documents(200, seed=8)
    assert a == b
    assert [d["text"] for d in a] != [d["text"] for d in c]
    assert sum(x["text"] == y["text"] for x, y in zip(a, c, strict=True)) == 0
    assert [d["id"] for d in a] == [f"doc-7-{i}" for i in range(200)]


def test_document_shape_and_unique_ids() -> None:
    docs = _docs()
    assert len(docs) == N
    assert len({d["id"] for d in docs}) == N
    for d in docs:
        assert set(d) == {"id", "url", "text", "meta"}
        assert re.fullmatch(r"https://[a-z0-9.-]+\.[a-z]{2,}/\S*", d["url"]), d["url"]
        assert d["meta"]["kind"] in KINDS
        assert d["meta"]["lang"] in ("en", *LANGUAGES)
        assert "{" not in d["text"]  # no unfilled template slot
        assert "\n\n" in d["text"]  # a title, then paragraphs
    # every kind and every language turns up
    assert {d["meta"]["kind"] for d in docs} == set(KINDS)
    assert {d["meta"]["lang"] for d in docs} == {"en", *LANGUAGES}
    # non-English pages are never labelled as reasoning
    assert all(d["meta"]["kind"] in nr_docs.FOREIGN_KINDS for d in docs if d["meta"]["lang"] != "en")


def test_rates_and_lengths() -> None:
    docs = _docs()
    foreign = sum(d["meta"]["lang"] != "en" for d in docs) / N
    assert 0.025 <= foreign <= 0.05
    english = [d for d in docs if d["meta"]["lang"] == "en"]
    reasoning = sum(d["meta"]["kind"] == "reasoning" for d in english) / len(english)
    assert 0.045 <= reasoning <= 0.085
    spaced = [_words(d) for d in docs if d["meta"]["lang"] not in CJK]
    assert min(spaced) >= nr_docs.MIN_WORDS
    assert max(spaced) <= nr_docs.MAX_WORDS + 400  # the last paragraph or worked example may run over
    assert abs(statistics.mean(spaced) - 700) <= 0.2 * 700
    # log-normal: the median sits well below the mean
    assert statistics.median(spaced) < 0.85 * statistics.mean(spaced)
    # Chinese and Japanese are counted as two characters per word
    assert min(len(d["text"]) for d in docs if d["meta"]["lang"] in CJK) >= 2 * nr_docs.MIN_WORDS


def test_rates_follow_arguments() -> None:
    docs = generate_documents(2000, seed=3, non_english_rate=0.2, reasoning_rate=0.3, mean_words=150)
    assert 0.16 <= sum(d["meta"]["lang"] != "en" for d in docs) / 2000 <= 0.24
    english = [d for d in docs if d["meta"]["lang"] == "en"]
    assert 0.25 <= sum(d["meta"]["kind"] == "reasoning" for d in english) / len(english) <= 0.35
    assert 120 <= statistics.mean(_words(d) for d in docs if d["meta"]["lang"] not in CJK) <= 180
    assert all(d["meta"]["lang"] == "en" for d in generate_documents(300, non_english_rate=0.0))
    assert all(d["meta"]["kind"] != "reasoning" for d in generate_documents(300, reasoning_rate=0.0))


def test_language_identifier_agrees_with_labels() -> None:
    # Shorter pages than the default (mean 60 words) keep py3langid's pure-Python scan fast, and short
    # pages are the harder case for it; the same holds for the default lengths (see the next test).
    docs = _docs(N, 1, 60.0)
    predicted = [py3langid.classify(d["text"])[0] for d in docs]
    share = sum(p != "en" for p in predicted) / N
    assert 0.02 <= share <= 0.055
    english = [p for p, d in zip(predicted, docs, strict=True) if d["meta"]["lang"] == "en"]
    foreign = [(p, d["meta"]["lang"]) for p, d in zip(predicted, docs, strict=True) if d["meta"]["lang"] != "en"]
    assert sum(p == "en" for p in english) >= 0.99 * len(english)
    assert sum(p != "en" for p, _ in foreign) >= 0.95 * len(foreign)
    assert sum(p == lang for p, lang in foreign) >= 0.9 * len(foreign)  # and mostly the right language


def test_english_check_on_default_lengths() -> None:
    # The pipeline's check: py3langid with normalised probabilities on the first 2,000 characters, English
    # when the probability is at least 0.8.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    docs = _docs()[:150] + tuple(d for d in _docs() if d["meta"]["lang"] != "en")
    kept: Counter[tuple[bool, bool]] = Counter()
    for d in docs:
        lang, prob = identifier.classify(d["text"][:2000])
        kept[d["meta"]["lang"] == "en", lang == "en" and prob >= 0.8] += 1
    english, foreign = kept[True, True] + kept[True, False], kept[False, True] + kept[False, False]
    assert kept[True, True] >= 0.99 * english
    assert kept[False, False] >= 0.95 * foreign


def test_reasoning_pages_show_their_working() -> None:
    docs = [d for d in _docs() if d["meta"]["kind"] == "reasoning"]
    assert docs
    cues = re.compile(
        r"\b(Step \d|Check|Answer|Proof|Claim|Fix|therefore|because|so|conclude|follows)\b", re.IGNORECASE
    )
    for d in docs:
        assert len(cues.findall(d["text"])) >= 3, d["text"][:300]
    assert sum(bool(re.search(r"\d", d["text"])) for d in docs) >= 0.8 * len(docs)  # mostly worked numbers
    others = [d for d in _docs() if d["meta"]["lang"] == "en" and d["meta"]["kind"] != "reasoning"]
    assert not any("Step 1: Find the cost" in d["text"] or "Proof:" in d["text"] for d in others)


def test_pages_look_like_web_pages() -> None:
    by_kind: dict[str, list[str]] = {}
    for d in _docs():
        if d["meta"]["lang"] == "en":
            by_kind.setdefault(d["meta"]["kind"], []).append(d["text"])
    assert any("Ingredients\n- " in t and "\n1. " in t for t in by_kind["recipe"])
    assert any("\nStep 1: " in t for t in by_kind["howto"])
    assert all(re.search(r"\$\d+\.99", t) for t in by_kind["product"])
    assert all(re.search(r"(19|20)\d\d", t) for t in by_kind["news"])
    assert any("Posted by " in t and "#2 " in t for t in by_kind["forum"])


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_write_documents_round_trip(tmp_path: Path, suffix: str) -> None:
    docs = generate_documents(60, seed=5, non_english_rate=0.3)
    path = write_documents(tmp_path / "sub" / f"docs{suffix}", docs)
    assert path == tmp_path / "sub" / f"docs{suffix}"
    raw = path.read_bytes()
    if suffix == ".jsonl.gz":
        assert raw[:2] == b"\x1f\x8b"
        raw = gzip.decompress(raw)
    elif suffix == ".jsonl.zst":
        assert raw[:4] == b"\x28\xb5\x2f\xfd"
        raw = zstandard.ZstdDecompressor().stream_reader(raw).read()
    lines = raw.decode("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == docs


def test_write_documents_rejects_unknown_suffix(tmp_path: Path) -> None:
    bad = tmp_path / "docs.txt"
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        write_documents(bad, generate_documents(3))
    assert not bad.exists()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "docs.jsonl.zst"
    assert main(["--n", "25", "--seed", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "25" in printed[0] and str(out) in printed[0]
    with out.open("rb") as fh:
        rows = [json.loads(line) for line in zstandard.ZstdDecompressor().stream_reader(fh).read().splitlines()]
    assert rows == generate_documents(25, seed=4)
