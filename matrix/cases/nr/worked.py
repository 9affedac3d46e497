"""Worked examples for the NaturalReasoning document generator: short problems solved step by step.

Each unit draws its own numbers and returns (a short topic for the page title, its paragraphs). The numbers
are chosen so that the working is exact and the stated answer checks out; that is why these stay in code
while the generator's other sentences live in ``data/*.yaml``. Every draw comes from the ``random.Random``
passed in, so a document depends only on its own seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from fractions import Fraction

from matrix.cases.nr.words import texts

Unit = Callable[[random.Random], tuple[str, list[str]]]

_FIRST = texts("en", "first_names")


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


UNITS: tuple[Unit, ...] = (
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
