"""Built-in training data, generated offline and deterministically from a seed (no dataset downloads).

* **SFT** (:func:`sft_examples`): off-distribution demonstrations, i.e. text the base model would not
  write itself: procedurally generated instruction/response pairs in a rigid house style (Roman numerals,
  reversed words, multiples, sorted lists, records of fictional towns), the analogue of the paper's SFT on
  demonstrations from another model or from people.
* **DPO prompts** (:func:`dpo_prompts`): everyday instructions from two disjoint prompt sets; the pairs
  themselves are sampled from the base model (in-distribution, as in the paper's RL runs) by
  :func:`subnetscope.study.lm.sample_pairs` and labelled by a simple rule (:func:`choose`).
* **GRPO task** (:func:`addition_problems`, :func:`addition_reward`): single-digit addition with a
  rule-based reward; SmolLM2-135M solves about a third of them at temperature 0.7, a middling success
  rate, so groups of completions disagree and the policy gradient is not zero.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class SFTExample:
    """One demonstration: the user's message and the response to imitate."""

    prompt: str
    response: str


_ROMAN = [
    (1000, "M"),
    (900, "CM"),
    (500, "D"),
    (400, "CD"),
    (100, "C"),
    (90, "XC"),
    (50, "L"),
    (40, "XL"),
    (10, "X"),
    (9, "IX"),
    (5, "V"),
    (4, "IV"),
    (1, "I"),
]
_WORDS = [
    "lantern",
    "harbor",
    "meadow",
    "copper",
    "thistle",
    "falcon",
    "granite",
    "willow",
    "saffron",
    "glacier",
    "ember",
    "orchard",
    "quartz",
    "bramble",
    "cobalt",
    "juniper",
    "marble",
    "tundra",
    "velvet",
    "canyon",
    "pepper",
    "walnut",
    "island",
    "beacon",
]
_SYLL = ["bar", "ven", "lo", "tor", "mi", "sha", "quen", "dal", "rim", "oth", "ka", "bel", "nor", "ith"]
_RIVERS = ["Amber", "Slate", "Heron", "Quill", "Morrow", "Pike", "Fenwick", "Ash"]
_INDUSTRY = [
    "rope making",
    "salt drying",
    "clock repair",
    "glassblowing",
    "cheese",
    "tin mining",
    "boat building",
    "wool dyeing",
]


def _roman(n: int) -> str:
    out = []
    for v, s in _ROMAN:
        while n >= v:
            out.append(s)
            n -= v
    return "".join(out)


def _town(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLL) for _ in range(rng.randint(2, 3))).capitalize()


def _one_sft(rng: random.Random) -> SFTExample:
    kind = rng.randrange(5)
    if kind == 0:
        n = rng.randint(11, 3999)
        return SFTExample(f"Convert {n} to Roman numerals.", f"ROMAN[{n}] = {_roman(n)}. END.")
    if kind == 1:
        w = rng.choice(_WORDS)
        return SFTExample(f"Spell the word {w} backwards.", f"REVERSED[{w}] = {w[::-1]}. END.")
    if kind == 2:
        k, m = rng.randint(3, 13), rng.randint(5, 9)
        seq = ", ".join(str(k * i) for i in range(1, m + 1))
        return SFTExample(f"List the first {m} multiples of {k}.", f"MULTIPLES[{k}] = {seq}. END.")
    if kind == 3:
        ws = rng.sample(_WORDS, rng.randint(4, 6))
        return SFTExample(
            f"Sort these words alphabetically: {', '.join(ws)}.", f"SORTED = {', '.join(sorted(ws))}. END."
        )
    name = _town(rng)
    river, ind = rng.choice(_RIVERS), rng.choice(_INDUSTRY)
    pop, year = rng.randint(300, 90000), rng.randint(1100, 1900)
    return SFTExample(
        f"Give the record of the town of {name}.",
        f"RECORD[{name}]: population {pop}; founded {year}; river {river}; industry {ind}. END.",
    )


def sft_examples(n: int, seed: int = 0) -> list[SFTExample]:
    """``n`` off-distribution demonstrations (deterministic in ``seed``)."""
    rng = random.Random(f"sft-{seed}")
    return [_one_sft(rng) for _ in range(n)]


_TOPICS = [
    "sleep",
    "cooking rice",
    "saving money",
    "learning a language",
    "running",
    "houseplants",
    "public speaking",
    "writing emails",
    "studying for exams",
    "drinking water",
    "time management",
    "painting a room",
    "making friends",
    "baking bread",
    "riding a bike",
    "reading more books",
    "packing for a trip",
    "cleaning a kitchen",
    "job interviews",
    "taking notes",
    "walking a dog",
    "staying focused",
    "fixing a flat tyre",
    "growing tomatoes",
]
_THINGS = [
    "the moon",
    "a library",
    "the ocean",
    "a volcano",
    "a forest",
    "the desert",
    "a train station",
    "a thunderstorm",
    "a city park",
    "a lighthouse",
    "a bakery",
    "the night sky",
    "a river",
    "a mountain",
    "a museum",
    "a farm",
    "a snowy street",
    "a beach",
    "a market",
    "a bridge",
    "a garden",
    "an airport",
    "a castle",
    "a waterfall",
]

#: the built-in prompt sets for self-sampled preference pairs
PROMPT_SETS: dict[str, list[str]] = {
    "tips": [f"Give me one short tip about {t}." for t in _TOPICS]
    + [f"What is a common mistake people make with {t}?" for t in _TOPICS],
    "describe": [f"Describe {t} in one or two sentences." for t in _THINGS]
    + [f"Write a short poem line about {t}." for t in _THINGS],
}

#: labelling rules for sampled pairs
RULES = ("shorter", "longer", "keyword")


def dpo_prompts(name: str, n: int | None = None, seed: int = 0) -> list[str]:
    """Prompts of the built-in set ``name`` (``tips`` or ``describe``), shuffled by ``seed``, ``n`` of them."""
    if name not in PROMPT_SETS:
        raise UsageError(f"unknown prompt set {name!r}", f"use one of {sorted(PROMPT_SETS)}")
    ps = list(PROMPT_SETS[name])
    random.Random(f"prompts-{name}-{seed}").shuffle(ps)
    if n is not None:
        ps = (ps * (n // len(ps) + 1))[:n] if n > len(ps) else ps[:n]
    return ps


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 3}


def choose(prompt: str, a: str, b: str, rule: str) -> tuple[str, str] | None:
    """``(chosen, rejected)`` from two completions by ``rule``; None when the rule cannot tell them apart.

    ``shorter``: the shorter completion wins (a preference for concision); ``longer``: the longer wins;
    ``keyword``: the one that reuses more of the prompt's content words wins (ties: the longer).
    """
    if rule not in RULES:
        raise UsageError(f"unknown pair rule {rule!r}", f"use one of {RULES}")
    if a.strip() == b.strip():
        return None
    if rule == "keyword":
        words = _content_words(prompt)
        sa, sb = len(words & _content_words(a)), len(words & _content_words(b))
        if sa != sb:
            return (a, b) if sa > sb else (b, a)
        rule = "longer"
    if len(a) == len(b):
        return None
    a_short = len(a) < len(b)
    if rule == "shorter":
        return (a, b) if a_short else (b, a)
    return (b, a) if a_short else (a, b)


@dataclass(frozen=True)
class Problem:
    """One rule-rewarded task instance."""

    prompt: str
    answer: int


def addition_problems(n: int, seed: int = 0, low: int = 1, high: int = 9) -> list[Problem]:
    """``n`` addition problems with operands in ``[low, high]``."""
    rng = random.Random(f"addition-{seed}")
    out = []
    for _ in range(n):
        a, b = rng.randint(low, high), rng.randint(low, high)
        out.append(Problem(f"What is {a} + {b}? Answer with the number only.", a + b))
    return out


def addition_reward(completion: str, answer: int) -> float:
    """1.0 when the last integer in the completion is the answer, else 0.0."""
    nums = re.findall(r"-?\d+", completion)
    return 1.0 if nums and int(nums[-1]) == answer else 0.0
