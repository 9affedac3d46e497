"""Offline web-like documents for the NaturalReasoning case (a stand-in for DCLM-baseline text).

Nothing here touches the network or a model: documents are put together from sentence templates and
word lists written for this module, with a seeded ``random.Random`` (never the global one), so the
same ``(n, seed, rates)`` always gives the same documents.

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
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import IO, Any

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


def _ints(lo: int, hi: int, step: int = 1) -> tuple[str, ...]:
    return tuple(str(v) for v in range(lo, hi + 1, step))


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


_FIRST = (
    "Maria", "James", "Priya", "Daniel", "Aisha", "Tom", "Elena", "Kevin", "Grace", "Omar", "Lucy", "Hiroshi",
    "Sam", "Nadia", "Peter", "Chloe", "Marcus", "Ruth", "Diego", "Hannah",
)  # fmt: skip
_LAST = (
    "Alvarez", "Brooks", "Chen", "Dawson", "Evans", "Fischer", "Gupta", "Hall", "Ibrahim", "Jensen", "Kowalski",
    "Lee", "Moreno", "Novak", "Okafor", "Patel", "Quinn", "Reyes", "Sullivan", "Turner",
)  # fmt: skip
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_TOWNS = (
    "Riverton", "Maple Falls", "Eastbrook", "Port Ellis", "Cedar Grove", "Northfield", "Ashford", "Millbrook",
    "Lakewood", "Fairhaven", "Stonebridge", "Westmere", "Harlow Bay", "Pine Ridge", "Glenmore", "Oakdale",
)  # fmt: skip
_USERS = (
    "gardenguy77", "techmom", "Ramblin_Rose", "quietcoder", "bikerdan", "old_timer", "sunnyday_22", "northwind",
    "mike_k", "LisaB", "DIYdave", "kettle_corn", "frosty", "paula.m", "jt_1988", "greenthumb", "nightowl",
)  # fmt: skip

_COMMON: dict[str, Sequence[str] | Callable[[random.Random], str]] = {
    "name": _name,
    "money": _money,
    "big": _big,
    "month": _MONTHS,
    "day": _WEEKDAYS,
    "dnum": _ints(1, 28),
    "num": _ints(2, 30),
    "small": _ints(2, 6),
    "pct": _ints(3, 45),
    "mins": _ints(15, 90, 5),
    "hours": _ints(2, 24),
    "year": _ints(2015, 2023),
    "city": _TOWNS,
}

# ------------------------------------------------------------------------------- English templates

_NEWS_TOPICS = (
    "the new library", "the downtown bridge repair", "the school budget", "the summer festival",
    "the housing plan", "the bus network changes", "the flood barrier", "the recycling program",
    "the hospital expansion", "the farmers market", "the new bike lanes", "the stadium renovation",
)  # fmt: skip
_NEWS_TITLES = (
    "{City} council approves {T}", "Residents weigh in on {T}", "What {T} means for {City}",
    "Officials delay vote on {T}", "{City} moves ahead with {T} despite objections",
    "Questions remain over the cost of {T}", "Update: {T} faces new delays",
)  # fmt: skip
_NEWS = (
    "Officials in {C} said on {day} that work on {T} would begin in {month}.",
    "The plan was approved late on {day} after more than three hours of debate.",
    "According to {org}, the project is expected to cost about ${millions} million.",
    '"We have been waiting for this for years," said {name}, who has lived in {C} for {num} years.',
    "Critics argue that {T} has been rushed and that residents were not given enough time to comment.",
    "The decision follows a public meeting last {day} that drew more than {big} people.",
    "A spokesperson for {org} declined to comment on the timeline.",
    "Traffic on the main road is likely to be slower than usual while crews are on site.",
    "The figures show a rise of {pct} percent compared with the same period last year.",
    "Local business owners have mixed feelings about {T}.",
    "{name}, a member of {org}, told reporters that more details would be shared at the next meeting.",
    "Funding comes partly from a state grant and partly from local taxes.",
    "The next public hearing is scheduled for {month} {dnum} at the community center.",
    "Supporters say {T} will bring new jobs and more visitors to the area.",
    "Several residents raised concerns about noise, parking and the cost to taxpayers.",
    "Police said no one was injured and the road reopened a few hours later.",
    "Forecasters expect heavy rain across {C} through the weekend.",
    "Enrollment at local schools has fallen by {pct} percent over the past five years.",
    "In a written statement, {org} said it remains committed to keeping the public informed.",
    "The original proposal was scaled back after an independent review found several problems.",
    "Attendance at the event reached {big} last year, a record for the town.",
    "Volunteers spent the morning clearing debris from the riverbank near {C}.",
    "Council members are expected to vote on the final budget in {month}.",
    "Last year's report estimated that about {pct} percent of households in {C} would be affected.",
    "The mayor told a packed room that the town could not afford to wait any longer.",
    "Opponents have collected roughly {big} signatures on a petition asking for a second look.",
    "Construction crews will work weekdays between 7 a.m. and 6 p.m., the city said.",
    "Neighbors in {city} are watching closely, since a similar plan is being discussed there.",
)
_NEWS_SLOTS = {
    **_COMMON,
    "org": (
        "the city council", "the state health department", "the regional transit authority", "the school board",
        "the chamber of commerce", "the county sheriff's office", "the local hospital", "the parks department",
        "the water utility", "a neighborhood association",
    ),
    "millions": _ints(2, 90),
}  # fmt: skip

_FORUM_TOPICS = (
    "my dishwasher", "the garden hose fitting", "my laptop battery", "the home router", "my sourdough starter",
    "my bike's rear gears", "the heat pump", "my phone camera", "the lawn mower", "the bathroom fan",
    "my car's air conditioning", "the new printer",
)  # fmt: skip
_FORUM_TITLES = (
    "Problem with {T}, any ideas?", "Question about {T}", "{T} suddenly stopped working",
    "Anyone else having trouble with {T}?", "Help needed: {T} making a strange noise",
)  # fmt: skip
_FORUM = (
    "Has anyone else had this problem with {T}?",
    "I've been dealing with it for about {num} weeks now and nothing seems to help.",
    "Thanks in advance for any advice!",
    "Same here, mine started doing the exact same thing after the last update.",
    "Did you try turning it off and on again? Sounds silly but it fixed it for me.",
    "Honestly I would just return it if you're still within the warranty period.",
    "Edit: never mind, I found the answer in another thread.",
    "I'm not an expert, but I think the issue is the settings, not the hardware.",
    "Bumping this because I still haven't found a fix.",
    "lol I had the same idea and it did not go well.",
    "My brother-in-law works in the industry and he says it's pretty common.",
    "Can you post a photo? Hard to tell what's going on from the description.",
    "I paid about {money} for mine and I'm happy with it so far.",
    "Great thread, bookmarking this for later.",
    "Not sure why this got downvoted, it's a fair question.",
    "Update: it worked! Thanks everyone for the help.",
    "Welcome to the forum, by the way.",
    "I'd check the manual first, there's a section about this near the back.",
    "Mine is the {year} model, if that makes a difference.",
    "IMO it's not worth the extra money unless you use it every day.",
    "We had a similar discussion last year, try searching the archives.",
    "Could be a loose cable, happened to me twice.",
    "Following, I have the same question.",
    "That's good to know, I was about to buy one.",
    "The guy at the store told me something completely different, so who knows.",
    "I gave up and called a repair shop, they charged {money} but it works now.",
    "You're not alone, there's a whole thread about this on the manufacturer's site.",
)

_RECIPE_TOPICS = (
    "lemon garlic chicken", "vegetable lasagna", "banana bread", "beef chili", "mushroom risotto",
    "oatmeal cookies", "tomato soup", "chickpea curry", "apple crumble", "potato leek soup",
    "blueberry muffins", "shrimp tacos",
)  # fmt: skip
_RECIPE_TITLES = (
    "Easy {T}", "The best {T} you will ever make", "Weeknight {T}", "Grandma's {T}",
    "One-pan {T} (ready in under an hour)", "Simple homemade {T}",
)  # fmt: skip
_RECIPE = (
    "This {T} has been a favorite in our house for years.",
    "I first made it on a rainy {day} and it has been on repeat ever since.",
    "It comes together in about {mins} minutes, which makes it perfect for busy weeknights.",
    "Don't be put off by the long ingredient list; most of it is pantry staples.",
    "My kids ask for it at least once a week.",
    "You can easily double the recipe and freeze half for later.",
    "The secret is to take your time with the first step and not rush it.",
    "If you don't have fresh herbs, dried ones work fine, just use about a third as much.",
    "Leftovers keep well in the fridge for up to {small} days.",
    "Scroll down for the printable recipe card.",
    "This post may contain affiliate links, which means I earn a small commission at no extra cost to you.",
    "I like to serve it with a simple green salad and some crusty bread.",
    "It tastes even better the next day once the flavors have had time to come together.",
    "Feel free to swap the butter for olive oil if you want a lighter version.",
    "We tested this recipe three times to get the balance just right.",
    "A heavy pan makes a real difference here because it holds the heat evenly.",
    "If you try it, leave a comment below and let me know how it turned out!",
    "My neighbor gave me the original version of this years ago and I have tweaked it ever since.",
)
_INGREDIENTS = (
    "2 cups all-purpose flour", "1 tsp salt", "3 cloves garlic, minced", "1 large onion, diced",
    "400 g canned tomatoes", "2 tbsp olive oil", "1 cup milk", "2 eggs", "1/2 cup sugar",
    "250 g mushrooms, sliced", "1 tsp baking soda", "500 ml vegetable stock", "1 lemon, juiced",
    "a handful of fresh parsley", "100 g butter, softened", "1 tsp ground cumin", "salt and pepper to taste",
    "1 can chickpeas, drained", "2 ripe bananas", "1 cup rolled oats", "1 red bell pepper, chopped",
)  # fmt: skip
_RECIPE_STEPS = (
    "Preheat the oven to {temp}°F.",
    "Heat the oil in a large pan over medium heat.",
    "Add the onion and cook for {small} minutes until soft.",
    "Stir in the garlic and cook for another minute.",
    "Whisk the eggs and sugar together in a bowl.",
    "Fold in the flour gently, taking care not to overmix.",
    "Pour the mixture into the prepared dish.",
    "Bake for {mins} minutes, or until golden on top.",
    "Simmer uncovered for {mins} minutes, stirring now and then.",
    "Season with salt and pepper and serve warm.",
    "Let it cool for 10 minutes before slicing.",
    "Garnish with parsley and a squeeze of lemon.",
    "Blend until smooth, adding a splash of water if it is too thick.",
    "Grease a loaf tin and line it with baking paper.",
)
_RECIPE_SLOTS = {**_COMMON, "temp": ("325", "350", "375", "400", "425")}

_HOWTO_TOPICS = (
    "fix a leaky faucet", "repaint a bedroom wall", "set up a home Wi-Fi network", "clean a cast iron pan",
    "replace a bike chain", "start a vegetable garden", "back up your phone", "hang a heavy mirror",
    "unclog a bathroom sink", "change a flat tire", "build a simple bookshelf", "install a smart thermostat",
)  # fmt: skip
_HOWTO_TITLES = (
    "How to {T}",
    "How to {T} in a few easy steps",
    "A beginner's guide: how to {T}",
    "How to {T} without a pro",
)
_HOWTO = (
    "Before you start, make sure you have everything you need within reach.",
    "This job takes most people about {mins} minutes.",
    "Safety first: switch off the power at the breaker before touching any wiring.",
    "If something doesn't look right, stop and check the manufacturer's instructions.",
    "You don't need expensive tools for this, a basic kit will do.",
    "Take a photo before you take anything apart so you know how it goes back together.",
    "Work slowly and don't force anything that doesn't want to move.",
    "Most hardware stores sell the parts for under {money}.",
    "Once you've done it once, the next time will be much quicker.",
    "Wear gloves and eye protection, especially when working overhead.",
    "Clean up as you go to avoid losing small screws and washers.",
    "If you're renting, check with your landlord before making changes.",
    "Give everything {hours} hours to dry before using it again.",
    "When in doubt, call a professional; a small fee now can save you a bigger bill later.",
    "Plenty of people manage to {T} on their first try, so don't be discouraged.",
    "Keep the packaging and receipt until you are sure everything works.",
)
_TOOLS = (
    "screwdriver", "adjustable wrench", "measuring tape", "spirit level", "cordless drill", "sandpaper",
    "painter's tape", "bucket", "old towels", "utility knife", "pliers", "stud finder", "flashlight",
)  # fmt: skip
_HOWTO_STEPS = (
    "Turn off the water supply under the sink.",
    "Remove the cover and set it aside somewhere safe.",
    "Measure twice and mark the spot with a pencil.",
    "Loosen the nut with a wrench, turning it counterclockwise.",
    "Clean the surface with warm soapy water and let it dry.",
    "Apply a thin, even coat and wait for it to dry.",
    "Fit the new part and tighten it by hand first.",
    "Check that everything is level before moving on.",
    "Turn the supply back on and test for leaks.",
    "Tidy up and dispose of old parts responsibly.",
    "Plug the device in and follow the setup prompts on screen.",
    "Write down the settings so you can restore them later.",
)

_PRODUCT_TOPICS = (
    "bluetooth speaker", "stainless steel water bottle", "ergonomic office chair", "cordless drill", "yoga mat",
    "air fryer", "LED desk lamp", "hiking backpack", "mechanical keyboard", "electric kettle", "robot vacuum",
    "rain jacket",
)  # fmt: skip
_BRANDS = ("Northpeak", "Verano", "Kestrel", "Brightline", "Oakhaus", "Lumo", "Trailmate", "Zentro", "Halvard")
_PRODUCT = (
    "Designed for everyday use, the {T} combines solid build quality with a clean, simple look.",
    "Free shipping on orders over ${ship}.",
    "Order within the next {hours} hours for delivery by {day}.",
    "Returns are accepted within 30 days of delivery, no questions asked.",
    "Please check the size chart before ordering.",
    "Colors may vary slightly from the images shown on screen.",
    "This item ships from our warehouse and usually arrives within {small} business days.",
    "In the box: the {T}, a quick start guide and a charging cable.",
    "Only {small} left in stock, order soon.",
    'Customer review: "Exactly what I needed, works great." (verified buyer)',
    'Customer review: "Good value for the price, though the instructions could be clearer."',
    'Customer review: "Stopped working after two months, pretty disappointed."',
    'Customer review: "Five stars, would buy again."',
    "Compare with similar items before you decide.",
    "Sign in to see your saved items and order history.",
    "Questions about this product? Our support team is available seven days a week.",
    "Whether you are at home or on the go, the {T} is built to keep up.",
    "Buy now, pay later with four interest-free payments.",
)
_FEATURES = (
    "Up to {hours} hours of use on a single charge",
    "Weighs just {grams} g",
    "Dishwasher-safe parts for easy cleaning",
    "Available in {small} colors",
    "Two-year limited warranty",
    "Water-resistant design",
    "Adjustable height and tilt",
    "Fast charging: {mins} minutes gives you a full day of use",
    "Made from recycled materials",
    "Includes a carrying case and USB-C cable",
    "Quiet operation, under {db} dB",
)
_PRODUCT_SLOTS = {**_COMMON, "grams": _ints(150, 950, 50), "db": _ints(30, 55), "ship": ("25", "35", "50", "75")}

_PLACES = (
    ("Eastbrook", "market town", "the north of the county"),
    ("Port Ellis", "harbor town", "the western coast"),
    ("Glenmore", "village", "the upper valley"),
    ("Harlow Bay", "coastal town", "the southern peninsula"),
    ("the Vell Valley", "river valley", "the central uplands"),
    ("Stonebridge", "small city", "the eastern plain"),
    ("Cedar Grove", "suburban town", "the river delta"),
    ("Lake Ormond", "freshwater lake", "the northern highlands"),
    ("Ashford", "parish", "the southern hills"),
)
_ENCYCLOPEDIC = (
    "{T} is first mentioned in records from the {century} century.",
    'The name is thought to come from an old word meaning "{meaning}".',
    "During the {century} century the area grew rapidly as trade expanded.",
    "The population was estimated at {big} in the most recent census.",
    "The climate is mild, with average summer temperatures around {temp} °C.",
    "Several buildings from this period survive and are now protected.",
    "The economy was historically based on farming, fishing and small-scale manufacturing.",
    "Today, tourism and services account for most local employment.",
    "A railway line reached the area in {oldyear}, which changed daily life considerably.",
    "Historians disagree about the exact date of the earliest settlement.",
    "The local dialect has several features not found elsewhere in the region.",
    "Notable people associated with {T} include the painter {name} and the engineer {name}.",
    "It covers an area of roughly {area} square kilometres.",
    "Much of the surrounding land is now part of a nature reserve.",
    "The annual fair, held every {month}, dates back several centuries.",
    "A stone church stands at the center of the old quarter.",
    "The main road was widened in the {decade}s to cope with growing traffic.",
    "Archaeological finds suggest that people lived here long before the first written records.",
    "Local government is run by an elected council of {num} members.",
    "The area is known for its orchards and for a cheese that carries its name.",
)
_ENCYCLOPEDIC_SLOTS = {
    **_COMMON,
    "century": ("twelfth", "thirteenth", "fifteenth", "sixteenth", "eighteenth", "nineteenth"),
    "meaning": ("ford by the ash trees", "stony hill", "meadow by the water", "wolf clearing", "salt harbor"),
    "temp": _ints(17, 26),
    "oldyear": _ints(1840, 1905),
    "decade": ("1920", "1950", "1960", "1970", "1980"),
    "area": _ints(12, 480, 7),
}
_SECTIONS = ("History", "Geography", "Economy", "Culture", "Transport", "Notable people")

_REVIEW_TOPICS = (
    "The Quiet Harbor", "Luna Bistro", "The Last Orchard", "Midnight Diner on Fifth Street", "Glass Rivers",
    "The Copper Kettle Cafe", "A Winter in Lisbon", "Station Eleven Pizza", "The Salt Road", "Blue Fern Thai",
)  # fmt: skip
_REVIEW_TITLES = ("Review: {T}", "{T} review: is it worth it?", "Our verdict on {T}", "I finally tried {T}")
_REVIEW = (
    "I went in with low expectations and came out pleasantly surprised.",
    "The first half is slow, but it picks up once the main story gets going.",
    "Service was friendly, although our food took almost {mins} minutes to arrive.",
    "The acting is solid across the board, with a standout performance from {name}.",
    "Portions are generous and prices are reasonable for the area.",
    "If you enjoyed the author's earlier work, you will probably like this one too.",
    "The ending felt rushed, as if the writers ran out of time.",
    "Overall, I'd give it {rating} out of 5.",
    "The dessert menu alone is worth the trip.",
    "It's not perfect, but it is a lot of fun.",
    "Some scenes drag on longer than they need to.",
    "We booked a table for {small} on a {day} night and the place was packed.",
    "The soundtrack deserves a special mention.",
    "I would recommend it to anyone looking for a light, easy read.",
    "Parking nearby can be tricky, so plan ahead.",
    "My partner liked it more than I did, which says something.",
    "Verdict: worth a look, but don't expect a masterpiece.",
    "Everyone I have talked to about {T} seems to have a strong opinion.",
    "The staff clearly care about what they do.",
    "At ${meal} for two, it is not cheap, but it is not outrageous either.",
)
_REVIEW_SLOTS = {**_COMMON, "rating": ("2", "3", "3.5", "4", "4.5", "5"), "meal": _ints(40, 140, 5)}

_BOILERPLATE_TITLES = (
    "Privacy Policy", "Terms of Use", "Cookie Notice", "Page not found", "Subscribe", "Archive", "Contact us",
)  # fmt: skip
_BOILERPLATE = (
    "We use cookies to improve your experience on our site and to show you relevant advertising.",
    "By continuing to browse, you agree to our use of cookies.",
    "Accept all | Reject all | Manage preferences",
    "Home | About Us | Blog | Shop | Contact",
    "Copyright © {year} {company}. All rights reserved.",
    "Sign up for our newsletter and get 10% off your first order.",
    "Your email address will not be published. Required fields are marked *",
    "This website is not responsible for the content of external sites.",
    "We may update this policy from time to time, and any changes will be posted on this page.",
    "Personal information is collected only when you voluntarily provide it to us.",
    "You have the right to request access to, correction of, or deletion of your personal data.",
    "These terms govern your use of the website and any services offered through it.",
    "If you do not agree with any part of these terms, please do not use the site.",
    "Follow us on Facebook, Instagram and YouTube.",
    "Skip to main content",
    "Log in | Register | Forgot your password?",
    "Page {small} of {num} | Next page » | Back to top",
    "Posted in Uncategorized | Leave a comment",
    "Related posts | Share this: Email, Print, Facebook",
    "For questions about this policy, please contact us at privacy@{company_domain}.",
    "Last updated: {month} {dnum}, {year}",
    "Third-party service providers may process data on our behalf under strict contracts.",
    "We retain data only as long as necessary for the purposes described above.",
    "Please enable JavaScript to view the comments.",
    "Sorry, the page you are looking for could not be found. Try searching or go back to the home page.",
    "All prices include tax. Shipping is calculated at checkout.",
    "Children under the age of 13 should not submit any personal information to this website.",
)
_COMPANIES = ("Brightline Media", "Oakhaus Ltd", "Northpeak Group", "Kestrel Digital", "Lumo Publishing")
_BOILERPLATE_SLOTS = {
    **_COMMON,
    "company": _COMPANIES,
    "company_domain": ("brightline.com", "oakhaus.co.uk", "northpeak.net", "kestreldigital.com", "lumo.io"),
}

_REASONING_GLUE = (
    "The key idea is to write down what you know before reaching for a formula.",
    "Always check that the units on both sides of an equation match.",
    "A common mistake is to apply the percentage to the wrong quantity.",
    "If an answer looks surprising, substitute it back into the original problem to check it.",
    "Each step follows from the one before it, so an error early on carries through to the end.",
    "Estimating first gives you a rough target, which makes slips easier to spot.",
    "Try each problem yourself before reading the working below.",
    "Let's go through the next one carefully, one step at a time.",
    "Notice how the same method works even when the numbers change.",
    "It helps to say in words what each quantity means before doing any arithmetic.",
)

# ---------------------------------------------------------------------------- other languages
# Per language: place names, topics, news sentences and titles, forum sentences and titles.

_FOREIGN: dict[str, dict[str, Any]] = {
    "es": {
        "slots": {
            "C": ("Valdemora", "Santa Lucía", "Puerto Real", "Villanueva", "San Esteban", "Los Olivos"),
            "T": (
                "el nuevo parque",
                "la reforma de la biblioteca",
                "el plan de vivienda",
                "la red de autobuses",
                "el mercado municipal",
                "la ampliación del hospital",
            ),
            "nombre": ("María López", "Javier Ruiz", "Carmen Ortega", "Andrés Molina", "Lucía Herrera"),
            "mes": ("enero", "marzo", "abril", "junio", "septiembre", "octubre", "noviembre"),
            "dia": ("lunes", "martes", "miércoles", "jueves", "viernes"),
            "O": (
                "el lavavajillas",
                "el router",
                "la batería del portátil",
                "la cortadora de césped",
                "la bomba de calor",
                "la cámara del móvil",
            ),
            "n": _ints(5, 40),
            "m": _ints(40, 400, 10),
        },
        "news_titles": (
            "El ayuntamiento de {C} aprueba {T}",
            "Los vecinos de {C} opinan sobre {T}",
            "Nuevo retraso en la votación sobre {T}",
        ),
        "news": (
            "Las autoridades de {C} anunciaron el {dia} que las obras comenzarán en {mes}.",
            "Según el ayuntamiento, el proyecto costará alrededor de {n} millones de euros.",
            '"Llevamos años esperando esto", explicó {nombre}, que vive en el barrio desde hace {n} años.',
            "Los críticos afirman que la decisión se tomó demasiado rápido y sin escuchar a los vecinos.",
            "La reunión del pasado {dia} reunió a más de {m} personas en el centro cultural.",
            "Un portavoz del gobierno regional prefirió no hacer declaraciones.",
            "Los datos muestran un aumento del {n} por ciento respecto al año anterior.",
            "Los comerciantes de la zona tienen opiniones divididas sobre {T}.",
            "La próxima sesión pública está prevista para el mes de {mes}.",
            "Los partidarios creen que el proyecto traerá empleo y más visitantes a la ciudad.",
            "Varios vecinos se quejaron del ruido, del aparcamiento y del coste para los contribuyentes.",
            "La policía informó de que no hubo heridos y la calle se reabrió pocas horas después.",
            "Esta noticia se actualizará cuando haya más información disponible.",
        ),
        "forum_titles": ("Problema con {O}, ¿alguna idea?", "Duda sobre {O}", "Ayuda urgente con {O}"),
        "forum": (
            "¿Alguien más ha tenido este problema con {O}?",
            "Llevo unas {n} semanas así y nada parece funcionar.",
            "Gracias de antemano por cualquier consejo.",
            "A mí me pasó lo mismo después de la última actualización.",
            "¿Has probado a apagarlo y volver a encenderlo? Parece una tontería, pero a mí me funcionó.",
            "Yo lo devolvería si todavía estás dentro del periodo de garantía.",
            "No soy experto, pero creo que el problema está en la configuración y no en el aparato.",
            "¿Puedes subir una foto? Así es difícil saber qué está pasando.",
            "Pagué unos {n} euros por el mío y de momento estoy contento.",
            "Actualización: ¡ya funciona! Muchas gracias a todos por la ayuda.",
            "Yo revisaría primero el manual, hay una sección sobre eso al final.",
            "En mi opinión no vale la pena gastar más dinero si no lo usas todos los días.",
        ),
        "tld": ("es", "com", "com.mx", "com.ar"),
        "domains": ("diariodelsur", "elcorreo-digital", "foroscasa", "noticiasvaldemora", "todoexpertos-hogar"),
    },
    "fr": {
        "slots": {
            "C": ("Beaumont-sur-Loire", "Saint-Rémy", "Valmont", "Les Ormes", "Clairvaux", "Montclair"),
            "T": (
                "le nouveau parc",
                "la rénovation de la médiathèque",
                "le plan logement",
                "le réseau de bus",
                "le marché couvert",
                "l'agrandissement de l'hôpital",
            ),
            "nom": ("Claire Martin", "Julien Bernard", "Sophie Moreau", "Nicolas Petit", "Camille Laurent"),
            "mois": ("janvier", "mars", "avril", "juin", "septembre", "octobre", "novembre"),
            "jour": ("lundi", "mardi", "mercredi", "jeudi", "vendredi"),
            "O": (
                "le lave-vaisselle",
                "la box internet",
                "la batterie de mon portable",
                "la tondeuse",
                "la pompe à chaleur",
                "l'appareil photo du téléphone",
            ),
            "n": _ints(5, 40),
            "m": _ints(40, 400, 10),
        },
        "news_titles": (
            "{C} : le conseil municipal adopte {T}",
            "Les habitants de {C} divisés sur {T}",
            "Nouveau report du vote sur {T}",
        ),
        "news": (
            "Les autorités de {C} ont annoncé {jour} que les travaux commenceront en {mois}.",
            "Selon la mairie, le projet coûtera environ {n} millions d'euros.",
            "« Nous attendons cela depuis des années », explique {nom}, qui habite le quartier depuis {n} ans.",
            "Les opposants estiment que la décision a été prise trop vite, sans consulter les habitants.",
            "La réunion publique de {jour} dernier a rassemblé plus de {m} personnes à la salle des fêtes.",
            "Un porte-parole de la préfecture n'a pas souhaité faire de commentaire.",
            "Les chiffres montrent une hausse de {n} pour cent par rapport à l'année dernière.",
            "Les commerçants du quartier sont partagés sur {T}.",
            "La prochaine séance publique est prévue au mois de {mois}.",
            "Selon ses partisans, le projet créera des emplois et attirera davantage de visiteurs.",
            "Plusieurs riverains se plaignent du bruit, du stationnement et du coût pour les contribuables.",
            "La police précise qu'il n'y a pas eu de blessés et que la rue a été rouverte quelques heures plus tard.",
            "Cet article sera mis à jour dès que nous aurons plus d'informations.",
        ),
        "forum_titles": ("Problème avec {O}, une idée ?", "Question sur {O}", "Besoin d'aide pour {O}"),
        "forum": (
            "Quelqu'un a-t-il déjà eu ce problème avec {O} ?",
            "Ça dure depuis environ {n} semaines et rien ne semble marcher.",
            "Merci d'avance pour vos conseils !",
            "Pareil chez moi, c'est arrivé juste après la dernière mise à jour.",
            "Tu as essayé de l'éteindre et de le rallumer ? Ça paraît bête, mais chez moi ça a marché.",
            "À ta place, je le renverrais si tu es encore sous garantie.",
            "Je ne suis pas expert, mais je pense que le problème vient des réglages et pas de l'appareil.",
            "Tu peux poster une photo ? C'est difficile de savoir ce qui se passe avec seulement la description.",
            "J'ai payé le mien environ {n} euros et pour l'instant j'en suis content.",
            "Mise à jour : ça marche ! Merci beaucoup à tous pour votre aide.",
            "Je regarderais d'abord le mode d'emploi, il y a une section là-dessus à la fin.",
            "À mon avis, ça ne vaut pas le coup de payer plus si tu ne t'en sers pas tous les jours.",
        ),
        "tld": ("fr", "be", "ch"),
        "domains": ("lejournal-local", "actu-valmont", "forum-maison", "infos-regionales", "bricoleurs-entraide"),
    },
    "de": {
        "slots": {
            "C": ("Bergfelden", "Altenbrück", "Lindenau", "Rosenthal", "Kirchheim", "Talberg"),
            "T": (
                "den neuen Park",
                "die Sanierung der Bibliothek",
                "das Wohnungsbauprogramm",
                "das neue Busnetz",
                "die Markthalle",
                "die Erweiterung des Krankenhauses",
            ),
            "name": ("Anna Becker", "Jonas Wagner", "Sabine Koch", "Thomas Richter", "Lena Schulz"),
            "monat": ("Januar", "März", "April", "Juni", "September", "Oktober", "November"),
            "tag": ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag"),
            "O": (
                "dem Geschirrspüler",
                "dem Router",
                "dem Akku meines Laptops",
                "dem Rasenmäher",
                "der Wärmepumpe",
                "der Handykamera",
            ),
            "n": _ints(5, 40),
            "m": _ints(40, 400, 10),
        },
        "news_titles": (
            "{C}: Stadtrat stimmt für {T}",
            "Streit in {C} über {T}",
            "Abstimmung über {T} erneut verschoben",
        ),
        "news": (
            "Die Stadtverwaltung von {C} kündigte am {tag} an, dass die Arbeiten im {monat} beginnen sollen.",
            "Nach Angaben der Stadt wird das Projekt rund {n} Millionen Euro kosten.",
            "„Darauf warten wir schon seit Jahren“, sagt {name} aus {C}.",
            "Kritiker meinen, die Entscheidung sei zu schnell und ohne Beteiligung der Bürger gefallen.",
            "Zur Bürgerversammlung am vergangenen {tag} kamen mehr als {m} Menschen.",
            "Ein Sprecher des Landratsamts wollte sich dazu nicht äußern.",
            "Die Zahlen zeigen einen Anstieg um {n} Prozent im Vergleich zum Vorjahr.",
            "Die Geschäftsleute in der Innenstadt sehen die Pläne für {T} mit gemischten Gefühlen.",
            "Die nächste öffentliche Sitzung ist für {monat} geplant.",
            "Befürworter hoffen, dass das Vorhaben neue Arbeitsplätze und mehr Besucher in die Stadt bringt.",
            "Mehrere Anwohner beschweren sich über Lärm, fehlende Parkplätze und die Kosten für die Steuerzahler.",
            "Laut Polizei wurde niemand verletzt, und die Straße war wenige Stunden später wieder frei.",
            "Dieser Artikel wird aktualisiert, sobald neue Informationen vorliegen.",
        ),
        "forum_titles": (
            "Problem mit {O}, hat jemand eine Idee?",
            "Frage zu {O}",
            "Ärger mit {O} seit dem Update",
        ),
        "forum": (
            "Hatte jemand schon mal dieses Problem mit {O}?",
            "Das geht jetzt schon seit etwa {n} Wochen so und nichts hilft.",
            "Vielen Dank im Voraus für jeden Tipp!",
            "Bei mir genau das Gleiche, seit dem letzten Update.",
            "Hast du das Gerät schon aus- und wieder eingeschaltet? Klingt albern, hat bei mir aber geholfen.",
            "Ich würde es zurückschicken, solange du noch Garantie hast.",
            "Ich bin kein Experte, aber ich glaube, es liegt an den Einstellungen und nicht am Gerät.",
            "Kannst du ein Foto hochladen? Aus der Beschreibung allein ist das schwer zu sagen.",
            "Ich habe für meins ungefähr {n} Euro bezahlt und bin bisher zufrieden.",
            "Nachtrag: Es funktioniert! Vielen Dank an alle für die Hilfe.",
            "Ich würde zuerst in die Bedienungsanleitung schauen, da gibt es hinten einen Abschnitt dazu.",
            "Meiner Meinung nach lohnt sich der Aufpreis nur, wenn man es jeden Tag benutzt.",
        ),
        "tld": ("de", "at", "ch"),
        "domains": ("tageblatt-online", "heimwerker-forum", "stadtanzeiger", "nachrichten-regional", "technikfragen"),
    },
    "pt": {
        "slots": {
            "C": ("São Miguel", "Vila Nova", "Santa Rita", "Campo Belo", "Ribeira Grande", "Boa Vista"),
            "T": (
                "o novo parque",
                "a reforma da biblioteca",
                "o plano de habitação",
                "a rede de transportes",
                "o mercado municipal",
                "a ampliação do hospital",
            ),
            "nome": ("Ana Souza", "João Pereira", "Mariana Costa", "Pedro Almeida", "Beatriz Santos"),
            "mes": ("janeiro", "março", "abril", "junho", "setembro", "outubro", "novembro"),
            "O": (
                "a máquina de lavar louça",
                "o roteador",
                "a bateria do notebook",
                "o cortador de grama",
                "a bomba de calor",
                "a câmera do celular",
            ),
            "n": _ints(5, 40),
            "m": _ints(40, 400, 10),
        },
        "news_titles": (
            "Prefeitura de {C} aprova {T}",
            "Moradores de {C} discutem {T}",
            "Votação sobre {T} é adiada mais uma vez",
        ),
        "news": (
            "A prefeitura de {C} anunciou nesta semana que as obras vão começar em {mes}.",
            "Segundo a prefeitura, o projeto deve custar cerca de {n} milhões de reais.",
            '"Esperamos por isso há muitos anos", disse {nome}, que mora no bairro há {n} anos.',
            "Os críticos afirmam que a decisão foi tomada rápido demais e sem ouvir os moradores.",
            "A reunião pública da semana passada reuniu mais de {m} pessoas no centro cultural.",
            "Um porta-voz do governo estadual não quis comentar o assunto.",
            "Os dados mostram um aumento de {n} por cento em relação ao ano passado.",
            "Os comerciantes da região estão divididos sobre {T}.",
            "A próxima audiência pública está marcada para o mês de {mes}.",
            "Os defensores acreditam que o projeto vai trazer empregos e mais visitantes para a cidade.",
            "Vários moradores reclamaram do barulho, da falta de estacionamento e do custo para os contribuintes.",
            "A polícia informou que ninguém ficou ferido e que a rua foi liberada poucas horas depois.",
            "Esta notícia será atualizada assim que houver mais informações.",
            "Muitos moradores ainda não sabem como {T} vai mudar a rotina do bairro.",
        ),
        "forum_titles": ("Problema com {O}, alguma ideia?", "Dúvida sobre {O}", "Ajuda com {O}"),
        "forum": (
            "Alguém mais já teve esse problema com {O}?",
            "Estou assim há umas {n} semanas e nada parece resolver.",
            "Desde já agradeço qualquer dica!",
            "Comigo aconteceu a mesma coisa depois da última atualização.",
            "Você já tentou desligar e ligar de novo? Parece bobagem, mas comigo funcionou.",
            "Eu devolveria, se você ainda estiver dentro do prazo de garantia.",
            "Não sou especialista, mas acho que o problema está nas configurações e não no aparelho.",
            "Você pode postar uma foto? Só pela descrição fica difícil saber o que está acontecendo.",
            "Paguei uns {n} reais no meu e até agora estou satisfeito.",
            "Atualização: funcionou! Muito obrigado a todos pela ajuda.",
            "Eu olharia primeiro o manual, tem uma parte sobre isso no final.",
            "Na minha opinião, não vale a pena pagar mais se você não usa todos os dias.",
        ),
        "tld": ("com.br", "pt"),
        "domains": ("jornaldacidade", "noticias-vilanova", "forumcasa", "portaldobairro", "clubedotecnico"),
    },
    "it": {
        "slots": {
            "C": ("San Vito", "Montefiore", "Castelnuovo", "Borgo Alto", "Villafranca", "Roccabella"),
            "T": (
                "il nuovo parco",
                "la ristrutturazione della biblioteca",
                "il piano casa",
                "la rete degli autobus",
                "il mercato coperto",
                "l'ampliamento dell'ospedale",
            ),
            "nome": ("Giulia Rossi", "Marco Bianchi", "Francesca Romano", "Luca Ferrari", "Chiara Esposito"),
            "mese": ("gennaio", "marzo", "aprile", "giugno", "settembre", "ottobre", "novembre"),
            "giorno": ("lunedì", "martedì", "mercoledì", "giovedì", "venerdì"),
            "O": (
                "la lavastoviglie",
                "il router",
                "la batteria del portatile",
                "il tosaerba",
                "la pompa di calore",
                "la fotocamera del telefono",
            ),
            "n": _ints(5, 40),
            "m": _ints(40, 400, 10),
        },
        "news_titles": (
            "{C}, il consiglio comunale approva {T}",
            "{C}, polemiche per {T}",
            "Ancora nessuna decisione per {T}",
        ),
        "news": (
            "Il comune di {C} ha annunciato {giorno} che i lavori inizieranno a {mese}.",
            "Secondo l'amministrazione, il progetto costerà circa {n} milioni di euro.",
            "«Lo aspettiamo da anni», ha spiegato {nome}, che vive nel quartiere da {n} anni.",
            "I critici sostengono che la decisione sia stata presa troppo in fretta e senza ascoltare i cittadini.",
            "L'assemblea pubblica di {giorno} scorso ha riunito più di {m} persone nella sala civica.",
            "Un portavoce della regione non ha voluto commentare.",
            "I dati mostrano un aumento del {n} per cento rispetto all'anno precedente.",
            "Molti residenti si chiedono come {T} cambierà la vita del quartiere.",
            "La prossima seduta pubblica è prevista per il mese di {mese}.",
            "Secondo i sostenitori, il progetto porterà nuovi posti di lavoro e più visitatori in città.",
            "Diversi residenti si sono lamentati del rumore, dei parcheggi e dei costi per i contribuenti.",
            "La polizia ha riferito che non ci sono stati feriti e che la strada è stata riaperta poche ore dopo.",
            "Questa notizia sarà aggiornata non appena saranno disponibili altre informazioni.",
        ),
        "forum_titles": ("Problema con {O}, qualche idea?", "Domanda su {O}", "Aiuto: {O} non funziona"),
        "forum": (
            "Qualcun altro ha avuto questo problema con {O}?",
            "Va avanti così da circa {n} settimane e niente sembra funzionare.",
            "Grazie in anticipo per qualsiasi consiglio!",
            "Anche a me è successa la stessa cosa dopo l'ultimo aggiornamento.",
            "Hai provato a spegnerlo e riaccenderlo? Sembra una sciocchezza, ma a me ha funzionato.",
            "Io lo restituirei, se sei ancora nel periodo di garanzia.",
            "Non sono un esperto, ma credo che il problema sia nelle impostazioni e non nel dispositivo.",
            "Puoi pubblicare una foto? Solo dalla descrizione è difficile capire cosa succede.",
            "Ho pagato il mio circa {n} euro e per ora sono soddisfatto.",
            "Aggiornamento: funziona! Grazie mille a tutti per l'aiuto.",
            "Io darei prima un'occhiata al manuale, c'è una sezione apposita alla fine.",
            "Secondo me non vale la pena spendere di più se non lo usi tutti i giorni.",
        ),
        "tld": ("it",),
        "domains": ("gazzettalocale", "notizie-castelnuovo", "forumcasa", "ilcronista", "tuttotecnica"),
    },
    "nl": {
        "slots": {
            "C": ("Dijkhuizen", "Bergeveld", "Nieuwkerk", "Waterdam", "Hoogland", "Lindendaal"),
            "T": (
                "het nieuwe park",
                "de verbouwing van de bibliotheek",
                "het woningbouwplan",
                "het busnet",
                "de overdekte markt",
                "de uitbreiding van het ziekenhuis",
            ),
            "naam": ("Sanne de Vries", "Bram Jansen", "Femke Bakker", "Daan Visser", "Lotte Smit"),
            "maand": ("januari", "maart", "april", "juni", "september", "oktober", "november"),
            "dag": ("maandag", "dinsdag", "woensdag", "donderdag", "vrijdag"),
            "O": (
                "de vaatwasser",
                "de router",
                "de accu van mijn laptop",
                "de grasmaaier",
                "de warmtepomp",
                "de camera van mijn telefoon",
            ),
            "n": _ints(5, 40),
            "m": _ints(40, 400, 10),
        },
        "news_titles": (
            "Gemeenteraad {C} stemt in met {T}",
            "Inwoners van {C} verdeeld over {T}",
            "Besluit over {T} opnieuw uitgesteld",
        ),
        "news": (
            "De gemeente {C} maakte {dag} bekend dat de werkzaamheden in {maand} beginnen.",
            "Volgens de gemeente kost het project ongeveer {n} miljoen euro.",
            '"Hier wachten we al jaren op", zegt {naam}, die al {n} jaar in de wijk woont.',
            "Critici vinden dat het besluit te snel is genomen, zonder de bewoners te raadplegen.",
            "Op de informatieavond van afgelopen {dag} kwamen meer dan {m} mensen af.",
            "Een woordvoerder van de provincie wilde niet reageren.",
            "Uit de cijfers blijkt een stijging van {n} procent ten opzichte van vorig jaar.",
            "Ondernemers in het centrum zijn verdeeld over {T}.",
            "De volgende openbare vergadering staat gepland voor {maand}.",
            "Voorstanders denken dat het project nieuwe banen en meer bezoekers naar de stad brengt.",
            "Verschillende buurtbewoners klagen over geluidsoverlast, parkeerproblemen en de kosten.",
            "Volgens de politie raakte niemand gewond en was de straat een paar uur later weer open.",
            "Dit bericht wordt bijgewerkt zodra er meer bekend is.",
        ),
        "forum_titles": ("Probleem met {O}, iemand een idee?", "Vraag over {O}", "Hulp nodig met {O}"),
        "forum": (
            "Heeft iemand anders ook dit probleem met {O}?",
            "Het speelt nu al zo'n {n} weken en niets lijkt te helpen.",
            "Alvast bedankt voor jullie tips!",
            "Bij mij precies hetzelfde, sinds de laatste update.",
            "Heb je al geprobeerd hem uit en weer aan te zetten? Klinkt stom, maar bij mij hielp het.",
            "Ik zou hem terugsturen zolang je nog garantie hebt.",
            "Ik ben geen expert, maar volgens mij ligt het aan de instellingen en niet aan het apparaat.",
            "Kun je een foto plaatsen? Alleen aan de beschrijving is het lastig te zien wat er aan de hand is.",
            "Ik heb ongeveer {n} euro voor de mijne betaald en ben er tot nu toe tevreden mee.",
            "Update: het werkt! Iedereen bedankt voor de hulp.",
            "Ik zou eerst even in de handleiding kijken, achterin staat er een stukje over.",
            "Volgens mij is het de meerprijs niet waard als je het niet elke dag gebruikt.",
        ),
        "tld": ("nl", "be"),
        "domains": ("dagblad-regio", "nieuws-nieuwkerk", "klusforum", "wijkkrant", "techvragen"),
    },
    "ru": {
        "slots": {
            "C": ("Заречный", "Светлогорск", "Берёзовка", "Каменск", "Озёрск", "Новосёлки"),
            "T": (
                "Новый парк",
                "Ремонт библиотеки",
                "Доступное жильё",
                "Новые автобусные маршруты",
                "Городской рынок",
                "Расширение больницы",
            ),
            "imya": ("Ольга Петрова", "Анна Смирнова", "Елена Кузнецова", "Мария Иванова", "Татьяна Волкова"),
            "mesyac": ("в марте", "в апреле", "в мае", "в сентябре", "в октябре", "в ноябре"),
            "den": ("в понедельник", "во вторник", "в среду", "в четверг", "в пятницу"),
            "O": (
                "посудомоечной машиной",
                "роутером",
                "аккумулятором ноутбука",
                "газонокосилкой",
                "тепловым насосом",
                "камерой телефона",
            ),
            "n": _ints(5, 20),
            "m": _ints(40, 400, 10),
        },
        "news_titles": (
            "{C}: депутаты одобрили проект «{T}»",
            "Жители спорят о проекте «{T}»",
            "Голосование по проекту «{T}» снова перенесли",
        ),
        "news": (
            "Администрация города {C} {den} сообщила, что работы по проекту «{T}» начнутся {mesyac}.",
            "По словам чиновников, проект обойдётся примерно в {n} миллионов рублей.",
            "«Мы ждали этого много лет», — рассказала {imya}, которая давно живёт в этом районе.",
            "Критики считают, что решение приняли слишком поспешно и не учли мнение жителей.",
            "На общественные слушания пришли более {m} человек.",
            "Представитель областного правительства отказался от комментариев.",
            "Статистика показывает рост на {n} процентов по сравнению с прошлым годом.",
            "Местные предприниматели по-разному оценивают этот проект.",
            "Следующее заседание запланировано на конец месяца.",
            "Сторонники проекта уверены, что он принесёт новые рабочие места и привлечёт туристов.",
            "Несколько жителей пожаловались на шум, нехватку парковочных мест и расходы бюджета.",
            "В полиции сообщили, что никто не пострадал, а движение по улице восстановили через несколько часов.",
            "Новость будет обновляться по мере поступления информации.",
        ),
        "forum_titles": ("Проблема с {O}, есть идеи?", "Вопрос по поводу проблемы с {O}"),
        "forum": (
            "У кого-нибудь была такая проблема с {O}?",
            "Уже около {n} недель мучаюсь, ничего не помогает.",
            "Заранее спасибо за любые советы!",
            "У меня то же самое началось после последнего обновления.",
            "Пробовали выключить и снова включить? Звучит глупо, но мне помогло.",
            "Я бы вернул в магазин, пока действует гарантия.",
            "Я не специалист, но думаю, что дело в настройках, а не в самом устройстве.",
            "Можете выложить фото? По одному описанию трудно понять, в чём дело.",
            "Я заплатил за свой около {n} тысяч рублей и пока доволен.",
            "Обновление: всё заработало! Спасибо всем за помощь.",
            "Я бы сначала заглянул в инструкцию, там в конце есть раздел об этом.",
            "По-моему, переплачивать не стоит, если пользуетесь не каждый день.",
        ),
        "tld": ("ru", "su"),
        "domains": ("gorodskie-novosti", "zarechny-info", "forum-dom", "vesti-regiona", "tehnika-sovety"),
    },
    "zh": {
        "slots": {
            "C": ("临江市", "青山县", "南湖镇", "东城区", "白河市", "长宁县"),
            "T": ("新公园", "图书馆改造工程", "保障性住房计划", "公交线路调整", "农贸市场", "医院扩建项目"),
            "mingzi": ("王丽", "李强", "张伟", "刘洋", "陈静", "赵敏"),
            "yue": ("三月", "四月", "五月", "九月", "十月", "十一月"),
            "xingqi": ("周一", "周二", "周三", "周四", "周五"),
            "O": ("洗碗机", "路由器", "笔记本电池", "割草机", "空气源热泵", "手机摄像头"),
            "n": _ints(3, 20),
            "h": _ints(2, 9),
        },
        "news_titles": ("{C}{T}正式获批", "{C}居民热议{T}", "{T}表决再次推迟"),
        "news": (
            "{C}有关部门{xingqi}表示，{T}将于{yue}正式开工。",
            "据介绍，该项目总投资约{n}亿元。",
            "“我们等这一天已经等了很多年了。”居民{mingzi}说。",
            "也有市民认为，这项决定过于仓促，没有充分听取群众意见。",
            "上周举行的听证会吸引了{h}百多名市民参加。",
            "市政府相关负责人暂未对此作出回应。",
            "数据显示，今年同比增长了{n}个百分点。",
            "周边商户对{T}的看法不一。",
            "下一次公开会议预计将在{yue}举行。",
            "支持者认为，该项目将带来更多就业机会，并吸引更多游客。",
            "不少居民对噪音、停车难以及财政支出表示担忧。",
            "警方通报称，事故未造成人员伤亡，道路已于数小时后恢复通行。",
            "本报将持续关注事件进展。",
        ),
        "forum_titles": ("{O}突然坏了，求助！", "关于{O}的问题", "{O}有异响怎么办？"),
        "forum": (
            "有没有人遇到过{O}这样的问题？",
            "已经差不多{n}个星期了，试了很多办法都没用。",
            "先谢谢大家了！",
            "我的也是这样，上次系统更新之后就开始出问题了。",
            "你试过关机再重启吗？听起来很傻，但我的就是这样好的。",
            "如果还在保修期内，我建议直接退货。",
            "我不是专业人士，不过我觉得问题出在设置上，而不是硬件。",
            "能发张照片吗？光看描述很难判断是什么情况。",
            "我的大概花了{h}百块钱，目前用着还不错。",
            "更新：已经解决了！谢谢大家的帮助。",
            "建议先看看说明书，后面有专门讲这个问题的部分。",
            "个人觉得，如果不是每天都用，没必要多花这个钱。",
        ),
        "tld": ("cn", "com.cn"),
        "domains": ("difang-xinwen", "linjiang-news", "jiaju-luntan", "shenghuo-bang", "keji-wenda"),
    },
    "ja": {
        "slots": {
            "C": ("桜川市", "北山町", "南浜市", "青葉区", "川辺町", "緑ヶ丘"),
            "T": ("新しい公園", "図書館の改修", "住宅支援計画", "バス路線の見直し", "市民市場", "病院の増築"),
            "namae": ("佐藤", "鈴木", "高橋", "田中", "渡辺", "伊藤"),
            "tsuki": ("3月", "4月", "5月", "9月", "10月", "11月"),
            "youbi": ("月曜日", "火曜日", "水曜日", "木曜日", "金曜日"),
            "O": ("食洗機", "ルーター", "ノートパソコンのバッテリー", "芝刈り機", "エアコン", "スマホのカメラ"),
            "n": _ints(3, 20),
        },
        "news_titles": (
            "{C}、{T}を正式に決定",
            "{T}をめぐり住民の意見が分かれる",
            "{T}の採決、再び延期に",
        ),
        "news": (
            "{C}は{youbi}、{T}の工事を{tsuki}に始めると発表した。",
            "市によると、事業費はおよそ{n}億円になる見込みだという。",
            "「何年もこの日を待っていました」と、地元に住む{namae}さんは話す。",
            "一方で、住民の意見を十分に聞かずに決めたのではないかという批判も出ている。",
            "先週開かれた説明会には、{n}0人以上の市民が参加した。",
            "県の担当者は、取材に対してコメントを控えた。",
            "統計によると、昨年と比べて{n}パーセント増加している。",
            "周辺の商店主の間でも、{T}に対する受け止め方はさまざまだ。",
            "次回の公開会議は{tsuki}に開かれる予定だ。",
            "賛成する人たちは、新たな雇用が生まれ、観光客も増えると期待している。",
            "騒音や駐車場不足、税金の使い方について心配する声も多い。",
            "警察によると、けが人はおらず、道路は数時間後に通行できるようになった。",
            "この記事は、新しい情報が入りしだい更新します。",
        ),
        "forum_titles": ("{O}が急に動かなくなりました", "{O}について質問です", "{O}の調子が悪いです"),
        "forum": (
            "{O}で同じような問題が起きた人はいますか？",
            "もう{n}週間くらいこの状態で、何をしても直りません。",
            "アドバイスをいただけると助かります。よろしくお願いします。",
            "うちも同じです。前回のアップデートのあとからおかしくなりました。",
            "一度電源を切って入れ直してみましたか？ばかばかしく聞こえるかもしれませんが、私はそれで直りました。",
            "まだ保証期間内なら、返品したほうがいいと思います。",
            "詳しくはないのですが、本体ではなく設定の問題のような気がします。",
            "写真をアップしてもらえますか？説明だけだと状況がよくわかりません。",
            "私は{n}千円くらいで買いましたが、今のところ満足しています。",
            "追記：直りました！皆さん、本当にありがとうございました。",
            "まずは説明書を見てみるといいですよ。後ろのほうにこの件についての説明があります。",
            "毎日使うのでなければ、高いものを買う必要はないと思います。",
        ),
        "tld": ("jp", "co.jp"),
        "domains": ("chiiki-shimbun", "sakuragawa-news", "kurashi-soudan", "machi-jouhou", "kaden-qa"),
    },
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


_ENGLISH_POOLS: dict[str, tuple[Sequence[str], Slots]] = {
    "news": (_NEWS, _NEWS_SLOTS),
    "forum": (_FORUM, _COMMON),
    "recipe": (_RECIPE, _RECIPE_SLOTS),
    "recipe_steps": (_RECIPE_STEPS, _RECIPE_SLOTS),
    "howto": (_HOWTO, _COMMON),
    "product": (_PRODUCT, _PRODUCT_SLOTS),
    "features": (_FEATURES, _PRODUCT_SLOTS),
    "encyclopedic": (_ENCYCLOPEDIC, _ENCYCLOPEDIC_SLOTS),
    "review": (_REVIEW, _REVIEW_SLOTS),
    "boilerplate": (_BOILERPLATE, _BOILERPLATE_SLOTS),
    "reasoning": (_REASONING_GLUE, _COMMON),
}


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

_DOMAINS: dict[str, tuple[str, ...]] = {
    "news": ("dailyledger", "metrowire", "thecountypost", "valleytribune", "harborgazette", "localbeat"),
    "forum": ("fixitforum", "homeownershub", "gearheads-board", "askthecommunity", "tinkerers"),
    "recipe": ("simplyhomecooking", "thecozyspoon", "weeknightbites", "flourandthyme", "panandplate"),
    "howto": ("diyweekend", "handyguides", "fixithowto", "homeprojects101", "tooltips-blog"),
    "product": ("shopnorthpeak", "gearoutlet", "homestore-direct", "bestbuysdeals", "everydaygoods"),
    "encyclopedic": ("openatlas", "regionwiki", "placepedia", "localhistory-archive", "townsandvillages"),
    "review": ("honestreviews", "thecriticscorner", "weekendverdict", "eatseeread", "reviewroundup"),
    "boilerplate": ("brightline", "oakhaus", "northpeak", "kestreldigital", "lumo-publishing"),
    "reasoning": ("mathhelpdesk", "stepbystep-tutor", "physicsforum", "codeanswers", "homeworkhelp", "learnwithproofs"),
}
_TLDS = ("com", "com", "com", "org", "net", "co.uk", "io", "blog")


def _news(rng: random.Random, page: _Page, town: str) -> tuple[str, str]:
    topic = rng.choice(_NEWS_TOPICS)
    title = rng.choice(_NEWS_TITLES).replace("{City}", town).replace("{T}", topic)
    title = title[0].upper() + title[1:]
    page.add(title)
    day = _date(rng)
    page.add(f"By {_name(rng)} | {_long_date(day)} | {rng.randint(2, 9)} min read")
    deck = _Deck(rng, _pool("news"))
    while not page.full:
        page.paragraph(deck, 2, 5)
    return f"/{day.year}/{day.month:02d}/{_slug(title)}", topic


def _forum(rng: random.Random, page: _Page, town: str) -> tuple[str, str]:
    topic = rng.choice(_FORUM_TOPICS)
    title = rng.choice(_FORUM_TITLES).replace("{T}", topic)
    title = title[0].upper() + title[1:]
    page.add(title)
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
    topic = rng.choice(_RECIPE_TOPICS)
    title = rng.choice(_RECIPE_TITLES).replace("{T}", topic)
    page.add(title)
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
    topic = rng.choice(_HOWTO_TOPICS)
    title = rng.choice(_HOWTO_TITLES).replace("{T}", topic)
    page.add(title)
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
    topic = rng.choice(_REVIEW_TOPICS)
    title = rng.choice(_REVIEW_TITLES).replace("{T}", topic)
    page.add(title)
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


# --------------------------------------------------------------------------- reasoning (worked) units
# Each unit returns (short topic for a title, paragraphs). Numbers are chosen so that the working is exact.


def _fmt(x: float | Fraction) -> str:
    """A number without a trailing ``.0``; at most two decimals."""
    value = float(x)
    if value == int(value):
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _superscript(k: int) -> str:
    return str(k).translate(str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻"))


def _unit_discount(rng: random.Random) -> tuple[str, list[str]]:
    who = rng.choice(_FIRST)
    items = rng.choice(("notebooks", "pens", "mugs", "tickets", "plants", "candles"))
    qty = rng.randint(3, 12)
    price_c = 20 * rng.randint(3, 60)
    disc = rng.choice((5, 10, 15, 20, 25, 30))
    sub_c = qty * price_c
    off_c = sub_c * disc // 100
    total_c = sub_c - off_c

    def d(c: int) -> str:
        return f"${c // 100}.{c % 100:02d}"

    return "percent discounts", [
        f"Problem: {who} buys {qty} {items} at {d(price_c)} each. The shop takes {disc}% off the whole purchase. "
        f"How much does {who} pay?",
        f"Step 1: Find the cost before the discount. {qty} × {d(price_c)} = {d(sub_c)}.\n"
        f"Step 2: Work out the discount. {disc}% of {d(sub_c)} is {disc}/100 × {d(sub_c)} = {d(off_c)}.\n"
        f"Step 3: Subtract it from the subtotal: {d(sub_c)} - {d(off_c)} = {d(total_c)}.",
        f"Check: paying {100 - disc}% of the subtotal should give the same amount, and {100 - disc}/100 × "
        f"{d(sub_c)} = {d(total_c)}. So {who} pays {d(total_c)}, which is less than the {d(sub_c)} sticker total, "
        f"as it should be. Answer: {d(total_c)}.",
    ]


def _unit_average_speed(rng: random.Random) -> tuple[str, list[str]]:
    t1, t2 = rng.choice((1, 1.5, 2, 2.5, 3)), rng.choice((0.5, 1, 1.5, 2))
    v1, v2 = rng.choice((40, 50, 60, 80)), rng.choice((30, 45, 60, 90, 100))
    d1, d2 = v1 * t1, v2 * t2
    avg = (d1 + d2) / (t1 + t2)
    naive = (v1 + v2) / 2
    vehicle = rng.choice(("A bus", "A delivery van", "A train", "A family car"))
    closing = (
        f"It is tempting to average the two speeds and get ({v1} + {v2}) / 2 = {_fmt(naive)} km/h, but that is "
        f"wrong here: the trip spends {_fmt(t1)} h at one speed and {_fmt(t2)} h at the other, so the speeds do not "
        f"count equally. Average speed is always total distance divided by total time."
        if t1 != t2
        else f"Here both legs take the same time, so the plain average of the speeds, ({v1} + {v2}) / 2, happens to "
        f"give the same answer. That is a coincidence of this problem, not a general rule."
    )
    return "average speed", [
        f"Problem: {vehicle} travels {_fmt(d1)} km at {v1} km/h and then {_fmt(d2)} km at {v2} km/h. What is its "
        f"average speed for the whole journey?",
        f"Step 1: Time for the first part: {_fmt(d1)} / {v1} = {_fmt(t1)} h.\n"
        f"Step 2: Time for the second part: {_fmt(d2)} / {v2} = {_fmt(t2)} h.\n"
        f"Step 3: Total distance is {_fmt(d1)} + {_fmt(d2)} = {_fmt(d1 + d2)} km, and total time is "
        f"{_fmt(t1)} + {_fmt(t2)} = {_fmt(t1 + t2)} h.\n"
        f"Step 4: Average speed = {_fmt(d1 + d2)} / {_fmt(t1 + t2)} = {_fmt(avg)} km/h.",
        closing + f" Answer: about {_fmt(avg)} km/h.",
    ]


def _unit_percent_change(rng: random.Random) -> tuple[str, list[str]]:
    old = rng.choice((40, 50, 80, 120, 200, 250, 400))
    p = rng.choice((10, 20, 25, 50))
    up = old * (100 + p) / 100
    down = up * (100 - p) / 100
    thing = rng.choice(("a jacket", "a concert ticket", "a monthly phone plan", "a bicycle", "a box of tea"))
    return "percentage increases and decreases", [
        f"Problem: The price of {thing} goes up by {p}% and later comes down by {p}%. It started at ${old}. Is it "
        f"back to ${old}?",
        f"After the increase the price is {old} × {100 + p}/100 = ${_fmt(up)}. The decrease is taken from this new, "
        f"larger price, so it is {p}% of {_fmt(up)}, which is ${_fmt(up - down)}. The final price is "
        f"{_fmt(up)} - {_fmt(up - down)} = ${_fmt(down)}.",
        f"So the answer is no: the price ends {_fmt(old - down)} dollars lower than it began. The reason is that "
        f"the two percentages are taken of different amounts. In general, going up by p% and down by p% "
        f"multiplies the price by (1 + p/100)(1 - p/100) = 1 - (p/100)², which is always less than 1. "
        f"Here that factor is {_fmt(down / old)}.",
    ]


def _unit_linear(rng: random.Random) -> tuple[str, list[str]]:
    x = rng.randint(-9, 15)
    a = rng.randint(2, 9)
    b = rng.choice([v for v in range(-20, 21) if v != 0])
    c = a * x + b
    sign = "+" if b > 0 else "-"
    move = f"subtract {b} from" if b > 0 else f"add {-b} to"
    return "solving linear equations", [
        f"Problem: Solve {a}x {sign} {abs(b)} = {c}.",
        f"Step 1: Get the x term on its own: {move} both sides, giving {a}x = {c - b}.\n"
        f"Step 2: Divide both sides by {a}: x = {c - b} / {a} = {x}.",
        f"Check by substituting back: {a} × {x} {sign} {abs(b)} = {a * x} {sign} {abs(b)} = {c}, which matches the "
        f"right-hand side. Doing the same operation to both sides keeps the equation balanced, which is why "
        f"each step is allowed. Answer: x = {x}.",
    ]


def _unit_kinematics(rng: random.Random) -> tuple[str, list[str]]:
    a = rng.choice((1.5, 2, 2.5, 3, 4))
    t = rng.choice((4, 5, 6, 8, 10))
    v = a * t
    s = 0.5 * a * t * t
    who = rng.choice(("A car", "A cyclist", "A sprinter", "A small plane on the runway"))
    return "constant acceleration", [
        f"Problem: {who} starts from rest and speeds up at a steady {_fmt(a)} m/s² for {t} s. How fast is it going "
        f"at the end, and how far has it travelled?",
        f"Because it starts from rest, the initial velocity u is 0. With constant acceleration the velocity grows "
        f"linearly, so v = u + a t = 0 + {_fmt(a)} × {t} = {_fmt(v)} m/s. For the distance we use "
        f"s = u t + ½ a t² = ½ × {_fmt(a)} × {t}² = {_fmt(s)} m.",
        f"A quick way to check: since the speed rises evenly from 0 to {_fmt(v)} m/s, the average speed is half of "
        f"that, {_fmt(v / 2)} m/s, and {_fmt(v / 2)} m/s × {t} s = {_fmt(s)} m. Both methods agree, so the answer "
        f"is {_fmt(v)} m/s and {_fmt(s)} m.",
    ]


def _unit_energy(rng: random.Random) -> tuple[str, list[str]]:
    m = rng.choice((2, 5, 10, 60, 80, 1000, 1200))
    v = rng.choice((2, 3, 4, 5, 10, 15, 20))
    ke = 0.5 * m * v * v
    return "kinetic energy", [
        f"Question: An object of mass {m} kg moves at {v} m/s. What is its kinetic energy, and what happens to the "
        f"energy if the speed doubles?",
        f"Kinetic energy is E = ½ m v². Substituting, E = ½ × {m} × {v}² = ½ × {m} × {v * v} = {_fmt(ke)} J.",
        f"If the speed doubles to {2 * v} m/s, the v² term becomes four times larger, because (2v)² = 4v². So the "
        f"energy rises to 4 × {_fmt(ke)} = {_fmt(4 * ke)} J, not merely twice as much. This is why a car at twice "
        f"the speed needs roughly four times the distance to brake: the brakes must remove four times the energy. "
        f"Answer: {_fmt(ke)} J, and {_fmt(4 * ke)} J at double the speed.",
    ]


_COMPOUNDS = (
    ("water", "H2O", 18.02),
    ("table salt", "NaCl", 58.44),
    ("carbon dioxide", "CO2", 44.01),
    ("glucose", "C6H12O6", 180.16),
    ("calcium carbonate", "CaCO3", 100.09),
)


def _unit_moles(rng: random.Random) -> tuple[str, list[str]]:
    name, formula, molar = rng.choice(_COMPOUNDS)
    n = rng.choice((0.25, 0.5, 1.5, 2, 3, 4))
    mass = round(n * molar, 2)
    exponent = 23 + math.floor(math.log10(n * 6.022))
    mantissa = n * 6.022 / 10 ** (exponent - 23)
    return "moles and molar mass", [
        f"Question: How many moles are in {_fmt(mass)} g of {name} ({formula}), and roughly how many formula units "
        f"is that?",
        f"The molar mass of {formula} is about {molar} g/mol, found by adding up the atomic masses of the atoms in "
        f"the formula. The number of moles is therefore mass divided by molar mass: n = {_fmt(mass)} / {molar} = "
        f"{_fmt(n)} mol.",
        f"One mole contains about 6.022 × 10²³ particles (Avogadro's number), so the sample holds about "
        f"{_fmt(n)} × 6.022 × 10²³ ≈ {mantissa:.2f} × 10{_superscript(exponent)} formula units. Notice that grams "
        f"cancel in the division and leave moles, which is a good sign the setup is right. Answer: {_fmt(n)} mol, "
        f"or about {mantissa:.2f} × 10{_superscript(exponent)} formula units.",
    ]


def _unit_circuit(rng: random.Random) -> tuple[str, list[str]]:
    r = rng.choice((2, 4, 5, 8, 10, 20))
    volts = rng.choice((6, 12, 24, 40))
    amps = Fraction(volts, r)
    power = volts * amps
    return "Ohm's law", [
        f"Problem: A {volts} V battery is connected across a {r} Ω resistor. Find the current and the power "
        f"the resistor turns into heat.",
        f"Ohm's law says V = I R, so I = V / R = {volts} / {r} = {_fmt(amps)} A. The power is P = V I = {volts} × "
        f"{_fmt(amps)} = {_fmt(power)} W.",
        f"We can check with a second formula, P = V² / R = {volts * volts} / {r} = "
        f"{_fmt(Fraction(volts * volts, r))} W, "
        f"which agrees. If the resistance were halved, the current would double and so would the power, since the "
        f"voltage stays fixed. Answer: {_fmt(amps)} A and {_fmt(power)} W.",
    ]


def _unit_probability(rng: random.Random) -> tuple[str, list[str]]:
    red, blue = rng.randint(2, 7), rng.randint(2, 7)
    total = red + blue
    first = Fraction(red, total)
    second = Fraction(red - 1, total - 1)
    both = first * second
    return "probability without replacement", [
        f"Problem: A bag holds {red} red and {blue} blue marbles. Two are drawn without putting the first one back. "
        f"What is the probability that both are red?",
        f"The first draw is red with probability {red}/{total}. Once a red marble is gone, {red - 1} red marbles "
        f"remain among {total - 1}, so the second draw is red with probability {red - 1}/{total - 1}. Both events "
        f"must happen, so we multiply: {red}/{total} × {red - 1}/{total - 1} = {both.numerator}/{both.denominator}.",
        f"As a decimal that is about {float(both):.3f}. It is smaller than ({red}/{total})² = {float(first**2):.3f}, "
        f"which would be the answer with replacement; removing a red marble makes a second red slightly less "
        f"likely. Answer: {both.numerator}/{both.denominator}.",
    ]


def _unit_pipes(rng: random.Random) -> tuple[str, list[str]]:
    a, b = rng.sample((2, 3, 4, 5, 6, 8, 10, 12), 2)
    rate = Fraction(1, a) + Fraction(1, b)
    together = 1 / rate
    return "work rates", [
        f"Problem: One hose fills a tank in {a} hours and a second hose fills it in {b} hours. How long does it "
        f"take with both running?",
        f"Think in terms of rates rather than times. The first hose fills 1/{a} of the tank per hour and the second "
        f"1/{b}. Together they fill 1/{a} + 1/{b} = {rate} of the tank per hour. The time for one full tank is the "
        f"reciprocal, {together} hours, which is about {float(together):.2f} hours.",
        f"Sanity check: the answer must be shorter than either hose alone, since both are helping, and "
        f"{float(together):.2f} is less than {min(a, b)}. Adding the times ({a} + {b}) or averaging them would give "
        f"something longer, which cannot be right. Answer: {together} hours.",
    ]


_CATEGORIES = (
    ("poodle", "dog"),
    ("canary", "bird"),
    ("tabby", "cat"),
    ("violin", "string instrument"),
    ("hatchback", "car"),
)


def _unit_logic(rng: random.Random) -> tuple[str, list[str]]:
    who = rng.choice(_FIRST)
    small, big = rng.choice(_CATEGORIES)
    event, no_event, result, no_result = rng.choice(
        (
            ("it rains", "it did not rain", "the match is cancelled", "the match went ahead"),
            ("the alarm is armed", "the alarm was not armed", "the panel light is red", "the panel light is green"),
            ("the server is down", "the server is up", "the status page shows an error", "the status page is clean"),
            ("the battery is flat", "the battery is fine", "the car will not start", "the car started"),
        )
    )
    return "valid and invalid arguments", [
        f"Every {small} is a {big}, and {who} owns a {small}. It follows that {who} owns a {big}. The argument is "
        f"valid because the first statement puts all {small}s inside the larger group of {big}s. The reverse does "
        f"not work: knowing that someone owns a {big} tells us nothing about whether it is a {small}.",
        f"Consider the rule: if {event}, then {result}. Suppose we learn that {no_result}. Then we can conclude "
        f"that {no_event}, since otherwise the rule would have forced the opposite of what we saw. This pattern is "
        f"called modus tollens.",
        f"But if we only learn that {result}, we cannot conclude that {event}. Something else might have caused "
        f"it. Treating the rule as if it ran in both directions is a classic mistake known as affirming the "
        f"consequent.",
    ]


def _unit_proof(rng: random.Random) -> tuple[str, list[str]]:
    choice = rng.randrange(3)
    if choice == 0:
        p, q = rng.randrange(1, 40, 2), rng.randrange(1, 40, 2)
        return "a short proof about odd numbers", [
            "Claim: the sum of any two odd numbers is even.",
            "Proof: an odd number can always be written as 2a + 1 for some whole number a. Take two odd numbers, "
            "2a + 1 and 2b + 1. Their sum is 2a + 2b + 2 = 2(a + b + 1). That is 2 times a whole number, so it is "
            "even. Since a and b were arbitrary, the claim holds for every pair of odd numbers.",
            f"Example: {p} + {q} = {p + q}, and {p + q} = 2 × {(p + q) // 2}. An example like this does not prove "
            f"the claim on its own; the algebra above is what covers all cases.",
        ]
    if choice == 1:
        n = rng.randint(10, 200)
        return "the sum of the first n whole numbers", [
            f"Claim: 1 + 2 + ... + {n} = {n * (n + 1) // 2}.",
            f"Write the sum forwards and backwards and add the two lines column by column: 1 + {n}, 2 + {n - 1}, and "
            f"so on. Every column adds up to {n + 1}, and there are {n} columns, so twice the sum is {n} × {n + 1} = "
            f"{n * (n + 1)}. Therefore the sum is {n * (n + 1)} / 2 = {n * (n + 1) // 2}.",
            "The same pairing argument works for any n and gives the general formula n(n + 1)/2. It also shows why "
            "the product n(n + 1) is always even: one of two consecutive numbers must be even.",
        ]
    k = rng.randint(3, 12)
    return "why the square root of 2 is irrational", [
        "Claim: the square root of 2 cannot be written as a fraction of two whole numbers.",
        "Suppose it could, say √2 = p/q with the fraction in lowest terms. Squaring gives p² = 2q², so p² is even, "
        "and therefore p is even (the square of an odd number is odd). Write p = 2r. Then 4r² = 2q², so q² = 2r², "
        "which means q is even too. But then p and q share the factor 2, contradicting the assumption that the "
        "fraction was in lowest terms. So no such fraction exists.",
        f"Numerically, {k}² = {k * k} while 2 × {k}² = {2 * k * k}; no perfect square equals exactly twice another "
        f"perfect square, which is the fact the proof establishes in general.",
    ]


def _unit_debug(rng: random.Random) -> tuple[str, list[str]]:
    values = [rng.randint(1, 20) for _ in range(rng.randint(3, 6))]
    if rng.random() < 0.5:
        return "an off-by-one bug", [
            "Question: my function is supposed to add up a list, but the total is always too small. What is wrong?",
            "def total(values):\n    s = 0\n    for i in range(1, len(values)):\n        s += values[i]\n    return s",
            f"Answer: walk through it with the list {values}. The loop starts at index 1, so values[0] = {values[0]} "
            f"is never added. The function returns {sum(values[1:])} instead of {sum(values)}, and the gap is "
            f"exactly the first element. That pattern points straight at the loop bounds.",
            "Fix: start the range at 0, or better, loop over the items directly with `for v in values: s += v`. "
            "Testing with a one-element list would have caught this at once, because the function returns 0 for it.",
        ]
    total = sum(values)
    return "integer division in an average", [
        "Question: my average function gives a whole number even when the true average is a fraction. Why?",
        "def mean(values):\n    return sum(values) // len(values)",
        f"Answer: the // operator is floor division, which throws away the remainder. For {values} the sum is "
        f"{total} and there are {len(values)} items, so the true mean is {total}/{len(values)} = "
        f"{_fmt(total / len(values))}, but {total} // {len(values)} = {total // len(values)}.",
        "Fix: use ordinary division, `sum(values) / len(values)`. It is also worth deciding what should happen for an "
        "empty list, since the current code would divide by zero.",
    ]


_UNITS: tuple[Callable[[random.Random], tuple[str, list[str]]], ...] = (
    _unit_discount,
    _unit_average_speed,
    _unit_percent_change,
    _unit_linear,
    _unit_kinematics,
    _unit_energy,
    _unit_moles,
    _unit_circuit,
    _unit_probability,
    _unit_pipes,
    _unit_logic,
    _unit_proof,
    _unit_debug,
)
_REASONING_TITLES = (
    "Worked example: {t}",
    "Homework help: {t}",
    "Step-by-step solutions: {t}",
    "Can someone check my working? ({t})",
    "Understanding {t}, with examples",
    "Practice problems on {t}",
)


def _reasoning(rng: random.Random, page: _Page, town: str) -> tuple[str, str]:
    unit = rng.choice(_UNITS)
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
        unit = unit if rng.random() < 0.4 else rng.choice(_UNITS)
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
