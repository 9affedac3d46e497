"""Offline web-like documents for the NaturalReasoning case (a stand-in for DCLM-baseline text).

Nothing here touches the network or a model: documents are put together from sentence templates and
word lists written for this package (``data/<lang>.yaml``, read by `matrix.cases.nr.words`) and worked
examples made in code (`matrix.cases.nr.worked`), with a seeded ``random.Random`` (never the global one),
so the same ``(n, seed, rates)`` always gives the same documents.

Every stage of the curation pipeline has something to act on:

- a share of the documents (``non_english_rate``, 3.68% by default) is written entirely in another
  language (Spanish, French, German, Portuguese, Italian, Dutch, Russian, Chinese or Japanese), for
  the English check;
- a share of the English documents (``reasoning_rate``) are worked explanations (math word problems
  solved step by step with numbers that add up, physics and chemistry calculations, logical arguments,
  short proofs, debugging walk-throughs): the passages a reasoning classifier should say Yes to and a
  question writer can turn into a problem with a checkable answer;
- the rest are ordinary pages (news, forum threads, recipes, how-to guides, shop pages, encyclopedia
  entries, reviews, and boilerplate such as cookie banners and privacy policies), with titles, lists,
  dates, prices and the like.

Lengths in words are log-normal with the requested mean (sigma 0.9), clipped to [30, 8000]; a page
stops at the first sentence (or list, or worked example) that reaches its length, so it may run a little
over. For Chinese and Japanese, which are written without spaces, a "word" is counted as two characters.

Sentences come from fixed pools (each template filled a couple of dozen ways, once per process), and a
page uses every template of its kind once before repeating any. That keeps generation fast (10,000
pages in well under a second of CPU), but the corpus is far more repetitive than real web text.

Each document is ``{"id", "url", "text", "meta": {"kind", "lang"}}``; ``meta`` is ground truth for
tests and analysis, and the pipeline never needs it.

CLI: ``python -m matrix.cases.nr.docs --n 10000 --seed 0 --out docs.jsonl.zst``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import itertools
import json
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date
from functools import cache
from pathlib import Path
from typing import IO, Any

from matrix.cases.nr.words import rows, slot_table, texts
from matrix.cases.nr.worked import UNITS

LANGUAGES: tuple[str, ...] = ("es", "fr", "de", "pt", "it", "nl", "ru", "zh", "ja")
KINDS: tuple[str, ...] = (
    "news",
    "forum",
    "recipe",
    "howto",
    "product",
    "encyclopedic",
    "review",
    "boilerplate",
    "reasoning",
)
# How often each non-reasoning English kind appears (relative weights).
ENGLISH_KIND_WEIGHTS: dict[str, float] = {
    "news": 0.20,
    "forum": 0.15,
    "product": 0.14,
    "encyclopedic": 0.12,
    "review": 0.12,
    "howto": 0.10,
    "recipe": 0.09,
    "boilerplate": 0.08,
}
FOREIGN_KINDS: tuple[str, ...] = ("news", "forum")
SIGMA = 0.9
MIN_WORDS = 30
MAX_WORDS = 8000
_VARIANTS = 24  # filled variants kept per template
_ORDERS = 32  # fixed shuffles of a pool's templates that documents draw from
_POOL_SEED = 20240517

Slots = Mapping[str, Sequence[str] | Callable[[random.Random], str]]

# ----------------------------------------------------------------------------------------- helpers


def _pick(source: Sequence[str] | Callable[[random.Random], str], rng: random.Random) -> str:
    return source(rng) if callable(source) else rng.choice(source)


def _fill(template: str, slots: Slots, rng: random.Random) -> str:
    """Fill every ``{name}`` in ``template`` from ``slots``. Upper-case names (``{T}``, ``{C}``, ``{O}``) stay
    as they are: they hold one value per document (its topic, town, object), filled in at the end."""

    return template.format_map(_Picker(slots, rng))


class _Picker(dict[str, str]):
    """A mapping for ``str.format_map`` that draws each missing name from its slot."""

    def __init__(self, slots: Slots, rng: random.Random) -> None:
        super().__init__()
        self.slots = slots
        self.rng = rng

    def __missing__(self, key: str) -> str:
        if key.isupper():
            return "{" + key + "}"
        return _pick(self.slots[key], self.rng)


def _cjk_words(text: str) -> int:
    return max(1, len(text) // 2)


def _space_words(text: str) -> int:
    return len(text.split())


def _counter(lang: str) -> Callable[[str], int]:
    return _cjk_words if lang in ("zh", "ja") else _space_words


def _money(rng: random.Random) -> str:
    return f"${rng.choice((5, 12, 20, 35, 49, 75, 120, 250, 400, 1200))}"


def _big(rng: random.Random) -> str:
    return f"{rng.randint(1, 40) * 25:,}"


def _name(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


# ------------------------------------------------------------------------------------- word lists
# Read from data/*.yaml once, at import; the code below uses them as the constants they are.

_FIRST = texts("en", "first_names")
_LAST = texts("en", "last_names")
_MONTHS = texts("en", "months")
_TOWNS = texts("en", "towns")
_USERS = texts("en", "users")
_TLDS = texts("en", "tlds")
_DOMAINS: dict[str, tuple[str, ...]] = {kind: texts("en", "kinds", kind, "domains") for kind in KINDS}

_COMMON: dict[str, Sequence[str] | Callable[[random.Random], str]] = {
    "name": _name,
    "money": _money,
    "big": _big,
    **slot_table("en", "common_slots"),
}


def _english(kind: str, key: str) -> tuple[str, ...]:
    return texts("en", "kinds", kind, key)


def _slots(kind: str) -> Slots:
    """The slots of an English kind's templates: the common ones, then the kind's own."""
    return {**_COMMON, **slot_table("en", "kinds", kind, "slots")}


_NEWS_TOPICS, _NEWS_TITLES = _english("news", "topics"), _english("news", "titles")
_FORUM_TOPICS, _FORUM_TITLES = _english("forum", "topics"), _english("forum", "titles")
_RECIPE_TOPICS, _RECIPE_TITLES = _english("recipe", "topics"), _english("recipe", "titles")
_INGREDIENTS = _english("recipe", "ingredients")
_HOWTO_TOPICS, _HOWTO_TITLES = _english("howto", "topics"), _english("howto", "titles")
_TOOLS, _HOWTO_STEPS = _english("howto", "tools"), _english("howto", "steps")
_PRODUCT_TOPICS, _BRANDS = _english("product", "topics"), _english("product", "brands")
_PLACES = rows("en", "kinds", "encyclopedic", "places", width=3)
_SECTIONS = _english("encyclopedic", "sections")
_REVIEW_TOPICS, _REVIEW_TITLES = _english("review", "topics"), _english("review", "titles")
_BOILERPLATE_TITLES = _english("boilerplate", "titles")
_REASONING_TITLES = _english("reasoning", "titles")

# pool name -> (templates, slots); a pool's name also seeds its fill, so renaming one changes the documents
_ENGLISH_POOLS: dict[str, tuple[Sequence[str], Slots]] = {
    "news": (_english("news", "sentences"), _slots("news")),
    "forum": (_english("forum", "sentences"), _slots("forum")),
    "recipe": (_english("recipe", "sentences"), _slots("recipe")),
    "recipe_steps": (_english("recipe", "steps"), _slots("recipe")),
    "howto": (_english("howto", "sentences"), _slots("howto")),
    "product": (_english("product", "sentences"), _slots("product")),
    "features": (_english("product", "features"), _slots("product")),
    "encyclopedic": (_english("encyclopedic", "sentences"), _slots("encyclopedic")),
    "review": (_english("review", "sentences"), _slots("review")),
    "boilerplate": (_english("boilerplate", "sentences"), _slots("boilerplate")),
    "reasoning": (_english("reasoning", "sentences"), _slots("reasoning")),
}

# Per language: its slots, news and forum templates and titles, site names and top-level domains.
_FOREIGN: dict[str, dict[str, Any]] = {
    lang: {
        "slots": slot_table(lang, "slots"),
        "news": texts(lang, "news", "sentences"),
        "news_titles": texts(lang, "news", "titles"),
        "forum": texts(lang, "forum", "sentences"),
        "forum_titles": texts(lang, "forum", "titles"),
        "domains": texts(lang, "domains"),
        "tld": texts(lang, "tlds"),
    }
    for lang in LANGUAGES
}

# ----------------------------------------------------------------------------------------- pools


class _Pool:
    """Per template, its filled variants with their word counts; and a few fixed orders of the templates."""

    __slots__ = ("groups", "orders")

    def __init__(self, groups: Sequence[Sequence[tuple[str, int]]], rng: random.Random) -> None:
        self.groups = tuple(tuple(g) for g in groups)
        self.orders = []
        for _ in range(_ORDERS):
            order = list(range(len(groups)))
            rng.shuffle(order)
            self.orders.append(tuple(order))


@cache
def _pool(key: str) -> _Pool:
    """Filled variants (with their word counts) of each template for one English kind or one ``lang:kind``
    pair. Built once from a fixed seed, so documents depend only on their own seed."""
    rng = random.Random(f"{_POOL_SEED}:{key}")
    if ":" in key:
        lang, kind = key.split(":")
        spec = _FOREIGN[lang]
        templates: Sequence[str] = spec[kind]
        slots: Slots = spec["slots"]
    else:
        lang = "en"
        templates, slots = _ENGLISH_POOLS[key]
    count = _counter(lang)
    groups = []
    for template in templates:
        variants = {_fill(template, slots, rng) for _ in range(_VARIANTS)}
        groups.append([(v, count(v)) for v in sorted(variants)])
    return _Pool(groups, rng)


class _Deck:
    """Draws sentences for one document: every template once, in a shuffled order, before any repeats."""

    __slots__ = ("groups", "order", "orders", "random")

    def __init__(self, rng: random.Random, pool: _Pool) -> None:
        self.random = rng.random
        self.groups = pool.groups
        self.orders = pool.orders
        self.order: list[int] = []

    def draw(self) -> tuple[str, int]:
        # rng.random() and int() rather than rng.choice(): this is the innermost loop of the generator.
        if not self.order:
            self.order.extend(self.orders[int(self.random() * len(self.orders))])
        group = self.groups[self.order.pop()]
        return group[int(self.random() * len(group))]

    def sentences(self, k: int) -> list[str]:
        return [self.draw()[0] for _ in range(k)]


class _Page:
    """Blocks of a page (joined by blank lines) and a running word count against a target."""

    __slots__ = ("count", "joiner", "parts", "target", "words")

    def __init__(self, target: int, lang: str) -> None:
        self.target = target
        self.parts: list[str] = []
        self.words = 0
        self.count = _counter(lang)
        self.joiner = "" if lang in ("zh", "ja") else " "

    @property
    def full(self) -> bool:
        return self.words >= self.target

    def add(self, block: str) -> None:
        self.parts.append(block)
        self.words += self.count(block)

    def paragraph(self, deck: _Deck, lo: int = 2, hi: int = 6) -> None:
        """A paragraph of ``lo``..``hi`` sentences from ``deck``, stopping early once the target is met."""
        chosen: list[str] = []
        words, target = self.words, self.target
        rand, groups, order, orders = deck.random, deck.groups, deck.order, deck.orders
        for _ in range(lo + int(rand() * (hi - lo + 1))):
            if not order:  # the same draw as deck.draw(), inlined: this is the generator's innermost loop
                order.extend(orders[int(rand() * len(orders))])
            group = groups[order.pop()]
            sentence, n = group[int(rand() * len(group))]
            chosen.append(sentence)
            words += n
            if words >= target:
                break
        self.parts.append(self.joiner.join(chosen))
        self.words = words

    def fill(self, deck: _Deck, lo: int = 2, hi: int = 6) -> None:
        while not self.full:
            self.paragraph(deck, lo, hi)

    def text(self) -> str:
        return "\n\n".join(self.parts)


_FIRST_DAY = date(2012, 1, 1).toordinal()


def _date(rng: random.Random) -> date:
    return date.fromordinal(_FIRST_DAY + rng.randrange(12 * 365))


def _later(rng: random.Random, day: date, most: int = 20) -> date:
    return date.fromordinal(day.toordinal() + rng.randint(0, most))


def _long_date(day: date) -> str:
    return f"{_MONTHS[day.month - 1]} {day.day}, {day.year}"


def _local_date(day: date, lang: str) -> str:
    if lang in ("zh", "ja"):
        return f"{day.year}年{day.month}月{day.day}日"
    return f"{day.day:02d}.{day.month:02d}.{day.year}"


_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(text: str) -> str:
    return _SLUG.sub("-", text.lower()).strip("-")[:70] or "page"


# ------------------------------------------------------------------------------ English page kinds
# Each fills ``page`` and returns (URL path, the page's topic); the caller puts the topic and town into {T} and {C}.


def _heading(
    rng: random.Random,
    page: _Page,
    topics: Sequence[str],
    titles: Sequence[str],
    *,
    town: str | None = None,
    capital: bool = False,
) -> tuple[str, str]:
    """Draw a topic, then a title template; fill its {City} (with ``town``, where given) and {T}, capitalise
    it if asked and make it the page's first line. Returns (topic, title)."""
    topic = rng.choice(topics)
    title = rng.choice(titles)
    if town is not None:
        title = title.replace("{City}", town)
    title = title.replace("{T}", topic)
    if capital:
        title = title[0].upper() + title[1:]
    page.add(title)
    return topic, title


def _news(rng: random.Random, page: _Page, town: str) -> tuple[str, str]:
    topic, title = _heading(rng, page, _NEWS_TOPICS, _NEWS_TITLES, town=town, capital=True)
    day = _date(rng)
    page.add(f"By {_name(rng)} | {_long_date(day)} | {rng.randint(2, 9)} min read")
    deck = _Deck(rng, _pool("news"))
    while not page.full:
        page.paragraph(deck, 2, 5)
    return f"/{day.year}/{day.month:02d}/{_slug(title)}", topic


def _forum(rng: random.Random, page: _Page, town: str) -> tuple[str, str]:
    topic, title = _heading(rng, page, _FORUM_TOPICS, _FORUM_TITLES, capital=True)
    deck = _Deck(rng, _pool("forum"))
    day = _date(rng)
    post = 1
    while not page.full:
        user = rng.choice(_USERS)
        when = _long_date(day)
        page.add(f"#{post} {user} wrote on {when}:" if post > 1 else f"Posted by {user} on {when}")
        page.paragraph(deck, 1, 5)
        day = _later(rng, day)
        post += 1
    return f"/t/{_slug(title)}/{rng.randint(1000, 99999)}", topic


def _recipe(rng: random.Random, page: _Page, town: str) -> tuple[str, str]:
    topic, title = _heading(rng, page, _RECIPE_TOPICS, _RECIPE_TITLES)
    deck = _Deck(rng, _pool("recipe"))
    for _ in range(rng.randint(1, 3)):
        page.paragraph(deck, 2, 5)
    if page.full:
        return f"/recipes/{_slug(title)}", topic
    prep, cook, serves = rng.choice((10, 15, 20, 25)), rng.choice((20, 30, 45, 60, 75)), rng.randint(2, 8)
    page.add(f"Prep time: {prep} min | Cook time: {cook} min | Serves {serves}")
    page.add("Ingredients\n" + "\n".join(f"- {item}" for item in rng.sample(_INGREDIENTS, rng.randint(5, 10))))
    steps = _Deck(rng, _pool("recipe_steps")).sentences(rng.randint(4, 8))
    page.add("Instructions\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1)))
    if not page.full:
        page.add("Notes")
        page.fill(deck, 2, 4)
    return f"/recipes/{_slug(title)}", topic


def _howto(rng: random.Random, page: _Page, town: str) -> tuple[str, str]:
    topic, title = _heading(rng, page, _HOWTO_TOPICS, _HOWTO_TITLES)
    deck = _Deck(rng, _pool("howto"))
    page.paragraph(deck, 2, 4)
    if not page.full:
        page.add("What you will need\n" + "\n".join(f"* {t}" for t in rng.sample(_TOOLS, rng.randint(3, 7))))
        steps = rng.sample(_HOWTO_STEPS, rng.randint(4, 8))
        page.add("\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1)))
    if not page.full:
        page.add("Tips")
        page.fill(deck, 2, 5)
    return f"/guides/{_slug(title)}", topic


def _product(rng: random.Random, page: _Page, town: str) -> tuple[str, str]:
    topic = rng.choice(_PRODUCT_TOPICS)
    brand = rng.choice(_BRANDS)
    title = f"{brand} {rng.choice(('Pro', 'Lite', 'Max', 'Go', 'One'))} {rng.randint(2, 9)} {topic}"
    price = rng.choice((19, 24, 39, 49, 79, 99, 129, 199, 249))
    page.add(title)
    page.add(
        f"${price}.99  (was ${price + rng.choice((10, 20, 30))}.99)  |  "
        f"{rng.choice(('3.9', '4.2', '4.4', '4.6', '4.8'))} out of 5 stars ({rng.randint(12, 4800):,} ratings)"
    )
    features = _Deck(rng, _pool("features")).sentences(rng.randint(3, 6))
    page.add("Key features\n" + "\n".join(f"- {f}" for f in features))
    deck = _Deck(rng, _pool("product"))
    page.fill(deck, 1, 4)
    return f"/p/{_slug(title)}-{rng.randint(100000, 999999)}", topic


def _encyclopedic(rng: random.Random, page: _Page, town: str) -> tuple[str, str]:
    name, kind, region = rng.choice(_PLACES)
    title = name[0].upper() + name[1:]
    page.add(title)
    page.add(f"{title} is a {kind} in {region}. This article is about the {kind}; for other uses, see {title}.")
    deck = _Deck(rng, _pool("encyclopedic"))
    sections = iter(rng.sample(_SECTIONS, len(_SECTIONS)))
    while not page.full:
        page.add(next(sections, "See also"))
        page.paragraph(deck, 3, 6)
    return f"/wiki/{title.replace(' ', '_')}", name


def _review(rng: random.Random, page: _Page, town: str) -> tuple[str, str]:
    topic, title = _heading(rng, page, _REVIEW_TOPICS, _REVIEW_TITLES)
    stars = rng.randint(2, 5)
    page.add(
        f"Rating: {'★' * stars}{'☆' * (5 - stars)} ({stars}/5) | Reviewed by {_name(rng)} on {_long_date(_date(rng))}"
    )
    page.fill(_Deck(rng, _pool("review")), 2, 6)
    return f"/reviews/{_slug(title)}", topic


def _boilerplate(rng: random.Random, page: _Page, town: str) -> tuple[str, str]:
    title = rng.choice(_BOILERPLATE_TITLES)
    page.add(title)
    page.fill(_Deck(rng, _pool("boilerplate")), 1, 4)
    return f"/{_slug(title)}", title


def _reasoning(rng: random.Random, page: _Page, town: str) -> tuple[str, str]:
    unit = rng.choice(UNITS)
    topic, paragraphs = unit(rng)
    title = rng.choice(_REASONING_TITLES).format(t=topic)
    title = title[0].upper() + title[1:]
    page.add(title)
    glue = _Deck(rng, _pool("reasoning"))
    if rng.random() < 0.5:
        page.paragraph(glue, 1, 3)
    count = 1
    while True:
        for block in paragraphs:
            page.add(block)
        if page.full:
            break
        count += 1
        page.add(f"Example {count}" if rng.random() < 0.6 else glue.draw()[0])
        unit = unit if rng.random() < 0.4 else rng.choice(UNITS)
        _, paragraphs = unit(rng)
    return f"/questions/{rng.randint(10000, 999999)}/{_slug(title)}", topic


_ENGLISH_KINDS: dict[str, Callable[[random.Random, _Page, str], tuple[str, str]]] = {
    "news": _news,
    "forum": _forum,
    "recipe": _recipe,
    "howto": _howto,
    "product": _product,
    "encyclopedic": _encyclopedic,
    "review": _review,
    "boilerplate": _boilerplate,
    "reasoning": _reasoning,
}


def _foreign(rng: random.Random, page: _Page, lang: str, kind: str) -> tuple[str, dict[str, str]]:
    spec = _FOREIGN[lang]
    slots: Slots = spec["slots"]
    values = {key: _pick(slots[key], rng) for key in ("C", "T", "O")}
    title = _fill(rng.choice(spec[f"{kind}_titles"]), slots, rng)
    for key, value in values.items():
        title = title.replace("{" + key + "}", value)
    title = title[0].upper() + title[1:]
    page.add(title)
    day = _date(rng)
    deck = _Deck(rng, _pool(f"{lang}:{kind}"))
    if kind == "news":
        page.add(_local_date(day, lang))
        page.fill(deck, 2, 5)
    else:
        post = 1
        while not page.full:
            page.add(f"#{post} · {rng.choice(_USERS)} · {_local_date(day, lang)}")
            day = _later(rng, day, 3)
            page.paragraph(deck, 1, 4)
            post += 1
    section = "forum/thread" if kind == "forum" else "article"
    return f"/{section}/{rng.randint(100000, 9999999)}.html", values


# ----------------------------------------------------------------------------------------- public


def generate_documents(
    n: int,
    *,
    seed: int = 0,
    non_english_rate: float = 0.0368,
    reasoning_rate: float = 0.065,
    mean_words: float = 700.0,
) -> list[dict[str, Any]]:
    """Make ``n`` web-like documents, the same ones every time for the same arguments.

    Each document is non-English with probability ``non_english_rate``; an English one is a worked
    explanation (kind ``reasoning``) with probability ``reasoning_rate``. Lengths in words are log-normal
    with mean ``mean_words`` (sigma 0.9), clipped to [30, 8000]."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= non_english_rate <= 1.0 or not 0.0 <= reasoning_rate <= 1.0:
        raise ValueError("rates must lie in [0, 1]")
    if mean_words <= 0:
        raise ValueError(f"mean_words must be positive, got {mean_words}")
    rng = random.Random(seed)
    mu = math.log(mean_words) - SIGMA * SIGMA / 2
    other_kinds = tuple(ENGLISH_KIND_WEIGHTS)
    cum = list(itertools.accumulate(ENGLISH_KIND_WEIGHTS.values()))
    docs: list[dict[str, Any]] = []
    for i in range(n):
        target = min(MAX_WORDS, max(MIN_WORDS, round(rng.lognormvariate(mu, SIGMA))))
        if rng.random() < non_english_rate:
            lang = rng.choice(LANGUAGES)
            kind = rng.choice(FOREIGN_KINDS)
            page = _Page(target, lang)
            path, values = _foreign(rng, page, lang, kind)
            domain = f"{rng.choice(_FOREIGN[lang]['domains'])}.{rng.choice(_FOREIGN[lang]['tld'])}"
        else:
            lang = "en"
            kind = "reasoning" if rng.random() < reasoning_rate else rng.choices(other_kinds, cum_weights=cum)[0]
            page = _Page(target, lang)
            town = rng.choice(_TOWNS)
            path, topic = _ENGLISH_KINDS[kind](rng, page, town)
            domain = f"{rng.choice(_DOMAINS[kind])}.{rng.choice(_TLDS)}"
            values = {"T": topic, "C": town}
        text = page.text()
        if "{" in text:
            for key, value in values.items():
                text = text.replace("{" + key + "}", value)
        docs.append(
            {
                "id": f"doc-{seed}-{i}",
                "url": f"https://{domain}{path}",
                "text": text,
                "meta": {"kind": kind, "lang": lang},
            }
        )
    return docs


_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")


def _checked(path: str | Path) -> Path:
    out = Path(path)
    if not out.name.endswith(_SUFFIXES):
        raise ValueError(
            f"cannot tell the format of {str(out)!r}: the name must end in .jsonl, .jsonl.gz or .jsonl.zst"
        )
    return out


def _open_text(path: Path) -> IO[str]:
    """A text handle for writing ``path``, compressed according to its suffix."""
    name = path.name
    if name.endswith(".jsonl.gz"):
        return gzip.open(path, "wt", encoding="utf-8")
    if name.endswith(".jsonl.zst"):
        import zstandard

        raw = open(path, "wb")  # noqa: SIM115 - the wrapper below closes it
        writer = zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=True)
        return io.TextIOWrapper(writer, encoding="utf-8")
    return open(path, "w", encoding="utf-8")


def write_documents(path: str | Path, docs: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``docs`` as JSON lines to ``path``: plain for ``.jsonl``, gzip for ``.jsonl.gz``, zstandard
    for ``.jsonl.zst``. Returns the path; any other suffix is a ``ValueError``."""
    out = _checked(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _open_text(out) as fh:
        for doc in docs:
            fh.write(json.dumps(doc, ensure_ascii=False))
            fh.write("\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate documents and write them to ``--out``."""
    parser = argparse.ArgumentParser(
        prog="python -m matrix.cases.nr.docs",
        description="Write offline web-like documents for the NaturalReasoning case.",
    )
    parser.add_argument("--n", type=int, default=10000, help="number of documents")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--non-english-rate", type=float, default=0.0368)
    parser.add_argument("--reasoning-rate", type=float, default=0.065)
    parser.add_argument("--mean-words", type=float, default=700.0)
    parser.add_argument("--out", required=True, help="output path ending in .jsonl, .jsonl.gz or .jsonl.zst")
    args = parser.parse_args(argv)
    try:
        _checked(args.out)
        docs = generate_documents(
            args.n,
            seed=args.seed,
            non_english_rate=args.non_english_rate,
            reasoning_rate=args.reasoning_rate,
            mean_words=args.mean_words,
        )
        path = write_documents(args.out, docs)
    except ValueError as err:
        parser.error(str(err))
    print(f"wrote {len(docs)} documents to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
