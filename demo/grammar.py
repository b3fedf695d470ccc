"""The demo world's text: a small English grammar with agreement, and minimal pairs in BLiMP's layout.

* ``grammar_sentence``: subject-verb number agreement (also across an attractor: "the girl near
  the dogs runs"), reflexive anaphors that agree with their subject in number (and gender: "the
  girls see themselves", "the boy sees himself") and determiners that agree with their noun
  ("this dog", "these dogs"). The vocabulary shares the pictures' colours
  (``babymerge.data.synthetic_winoground``).
* ``minimal_pairs``: one paradigm's pairs (``PARADIGMS``) in BLiMP's fields (``sentence_good``,
  ``sentence_bad``, ``UID``, ``pairID``, ``field``, ``linguistics_term``, ...), whose good
  sentence is not in a given set (the training text); ``write_world_tasks``: their lm-eval tasks.

``demo.world`` draws the training text and the held-out pairs from here, with its seed.
"""

from __future__ import annotations

import random
from pathlib import Path

from babymerge.data.synthetic_winoground import COLOURS
from babymerge.publish import atomic_output_dir

# -- the grammar -------------------------------------------------------------------------------
# noun: (singular, plural, the reflexive that agrees with it in the singular). Nouns are drawn
# with Zipfian frequencies (the k-th most frequent 1/k as often as the first), so agreement
# with the rarer ones keeps improving with more text: the minimal pairs draw nouns uniformly.
NOUNS = {
    "girl": ("girl", "girls", "herself"), "boy": ("boy", "boys", "himself"), "dog": ("dog", "dogs", "itself"),
    "square": ("square", "squares", "itself"), "cat": ("cat", "cats", "itself"),
    "circle": ("circle", "circles", "itself"), "man": ("man", "men", "himself"), "bird": ("bird", "birds", "itself"),
    "triangle": ("triangle", "triangles", "itself"), "woman": ("woman", "women", "herself"),
    "horse": ("horse", "horses", "itself"), "ball": ("ball", "balls", "itself"), "fox": ("fox", "foxes", "itself"),
    "mouse": ("mouse", "mice", "itself"), "box": ("box", "boxes", "itself"), "king": ("king", "kings", "himself"),
    "queen": ("queen", "queens", "herself"), "goose": ("goose", "geese", "itself"), "cow": ("cow", "cows", "itself"),
    "wolf": ("wolf", "wolves", "itself"), "star": ("star", "stars", "itself"), "duck": ("duck", "ducks", "itself"),
    "aunt": ("aunt", "aunts", "herself"), "uncle": ("uncle", "uncles", "himself"), "frog": ("frog", "frogs", "itself"),
    "cup": ("cup", "cups", "itself"), "bear": ("bear", "bears", "itself"), "tree": ("tree", "trees", "itself"),
    "pony": ("pony", "ponies", "itself"), "lamb": ("lamb", "lambs", "itself"),
}  # fmt: skip
NOUN_WEIGHTS = [1 / (k + 1) for k in range(len(NOUNS))]
ANIMATE = tuple(n for n in NOUNS if n not in {"square", "circle", "triangle", "ball", "box", "star", "cup", "tree"})
ANIMATE_WEIGHTS = [1 / (k + 1) for k in range(len(ANIMATE))]
ADJECTIVES = (*sorted(COLOURS), "big", "small")
# verb: (third person singular, plural)
INTRANSITIVE = {"run": ("runs", "run"), "sleep": ("sleeps", "sleep"), "move": ("moves", "move"),
                "fall": ("falls", "fall"), "wait": ("waits", "wait")}  # fmt: skip
TRANSITIVE = {"see": ("sees", "see"), "like": ("likes", "like"), "watch": ("watches", "watch"),
              "follow": ("follows", "follow"), "help": ("helps", "help")}  # fmt: skip
PREPOSITIONS = ("near", "behind", "above", "below", "beside")
DETERMINERS = {"sg": ("the", "this", "that", "a", "every"), "pl": ("the", "these", "those", "many")}
DEMONSTRATIVE_SWAP = {"this": "these", "these": "this", "that": "those", "those": "that"}
NUMBERS = ("sg", "pl")


def _other(number: str) -> str:
    return "pl" if number == "sg" else "sg"


def zipf_noun(rng: random.Random, animate: bool = False) -> str:
    nouns, weights = (ANIMATE, ANIMATE_WEIGHTS) if animate else (list(NOUNS), NOUN_WEIGHTS)
    return rng.choices(nouns, weights)[0]


def noun_phrase(rng: random.Random, number: str, noun: str | None = None, det: str | None = None) -> list[str]:
    """A noun phrase; without ``noun``, one drawn uniformly (the minimal pairs' choice)."""
    noun = noun or rng.choice(sorted(NOUNS))
    words = [det or rng.choice(DETERMINERS[number])]
    if rng.random() < 0.4:
        words.append(rng.choice(ADJECTIVES))
    return words + [NOUNS[noun][0 if number == "sg" else 1]]


def reflexive(noun: str, number: str) -> str:
    return NOUNS[noun][2] if number == "sg" else "themselves"


def verb(table: dict, lemma: str, number: str) -> str:
    return table[lemma][0 if number == "sg" else 1]


def sentence(words: list[str]) -> str:
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def grammar_sentence(rng: random.Random) -> str:
    """One grammatical sentence: intransitive, transitive or reflexive, the subject optionally
    modified by a prepositional phrase or an object relative clause whose noun (the
    attractor) has either number."""
    number = rng.choice(NUMBERS)
    kind = rng.choice(("intransitive", "transitive", "reflexive"))
    noun = zipf_noun(rng, animate=kind == "reflexive")
    words = noun_phrase(rng, number, noun)
    r = rng.random()
    if r < 0.4:
        words += [rng.choice(PREPOSITIONS)] + noun_phrase(rng, rng.choice(NUMBERS), zipf_noun(rng))
    elif r < 0.6:  # an object relative clause: its subject (another attractor) agrees with its own verb
        inner = rng.choice(NUMBERS)
        words += (
            ["that"]
            + noun_phrase(rng, inner, zipf_noun(rng))
            + [verb(TRANSITIVE, rng.choice(sorted(TRANSITIVE)), inner)]
        )
    if kind == "intransitive":
        words.append(verb(INTRANSITIVE, rng.choice(sorted(INTRANSITIVE)), number))
    elif kind == "transitive":
        words += [verb(TRANSITIVE, rng.choice(sorted(TRANSITIVE)), number)]
        words += noun_phrase(rng, rng.choice(NUMBERS), zipf_noun(rng))
    else:
        words += [verb(TRANSITIVE, rng.choice(sorted(TRANSITIVE)), number), reflexive(noun, number)]
    return sentence(words)


# -- minimal pairs (BLiMP layout) --------------------------------------------------------------
def _pair_subject_verb(rng: random.Random) -> tuple[list[str], list[str]]:
    number, lemma = rng.choice(NUMBERS), rng.choice(sorted(INTRANSITIVE))
    subject = noun_phrase(rng, number)
    return subject + [verb(INTRANSITIVE, lemma, number)], subject + [verb(INTRANSITIVE, lemma, _other(number))]


def _pair_attractor(rng: random.Random) -> tuple[list[str], list[str]]:
    number, lemma = rng.choice(NUMBERS), rng.choice(sorted(INTRANSITIVE))
    subject = noun_phrase(rng, number) + [rng.choice(PREPOSITIONS)] + noun_phrase(rng, _other(number))
    return subject + [verb(INTRANSITIVE, lemma, number)], subject + [verb(INTRANSITIVE, lemma, _other(number))]


def _pair_relative_clause(rng: random.Random) -> tuple[list[str], list[str]]:
    number, lemma = rng.choice(NUMBERS), rng.choice(sorted(INTRANSITIVE))
    inner = _other(number)
    subject = noun_phrase(rng, number) + ["that"] + noun_phrase(rng, inner)
    subject.append(verb(TRANSITIVE, rng.choice(sorted(TRANSITIVE)), inner))
    return subject + [verb(INTRANSITIVE, lemma, number)], subject + [verb(INTRANSITIVE, lemma, inner)]


def _pair_anaphor(rng: random.Random) -> tuple[list[str], list[str]]:
    number, noun, lemma = rng.choice(NUMBERS), rng.choice(sorted(ANIMATE)), rng.choice(sorted(TRANSITIVE))
    start = noun_phrase(rng, number, noun) + [verb(TRANSITIVE, lemma, number)]
    wrong = "themselves" if number == "sg" else NOUNS[noun][2]
    return start + [reflexive(noun, number)], start + [wrong]


def _pair_determiner(rng: random.Random) -> tuple[list[str], list[str]]:
    number, lemma = rng.choice(NUMBERS), rng.choice(sorted(INTRANSITIVE))
    det = rng.choice(("this", "that") if number == "sg" else ("these", "those"))
    good = noun_phrase(rng, number, det=det) + [verb(INTRANSITIVE, lemma, number)]
    return good, [DEMONSTRATIVE_SWAP[det], *good[1:]]


# UID: (builder, field, linguistics_term) as in BLiMP's files
PARADIGMS = {
    "world_subject_verb_agreement": (_pair_subject_verb, "morphology", "subject_verb_agreement"),
    "world_agreement_attractor": (_pair_attractor, "syntax", "subject_verb_agreement"),
    "world_agreement_relative_clause": (_pair_relative_clause, "syntax", "subject_verb_agreement"),
    "world_anaphor_number_agreement": (_pair_anaphor, "morphology", "anaphor_agreement"),
    "world_determiner_noun_agreement": (_pair_determiner, "morphology", "determiner_noun_agreement"),
}
GROUP = "world_blimp"


def minimal_pairs(uid: str, n: int, rng: random.Random, exclude: set[str]) -> list[dict]:
    """``n`` distinct pairs of paradigm ``uid`` whose good sentence is not in ``exclude``."""
    build, field, term = PARADIGMS[uid]
    rows, seen = [], set()
    for _ in range(1000 * n):
        good, bad = (sentence(w) for w in build(rng))
        if good in exclude or good in seen:
            continue
        seen.add(good)
        rows.append({"sentence_good": good, "sentence_bad": bad, "field": field, "linguistics_term": term,
                     "UID": uid, "simple_LM_method": True, "one_prefix_method": False, "two_prefix_method": False,
                     "lexically_identical": False, "pairID": str(len(rows))})  # fmt: skip
        if len(rows) == n:
            return rows
    raise ValueError(f"{uid}: only {len(rows)} held-out pairs exist, {n} asked for")


def write_world_tasks(out: Path) -> Path:
    """lm-eval tasks ``world_<paradigm>`` (and the group ``world_blimp``) that read
    ``$BABYMERGE_DATA/world_blimp/<UID>.jsonl`` with the project's BLiMP task template and scoring."""
    template = Path(__file__).resolve().parents[1] / "lm_eval_tasks" / "blimp" / "_template_yaml"
    with atomic_output_dir(out, overwrite=True) as tmp:
        for uid in PARADIGMS:
            (tmp / f"{uid}.yaml").write_text(
                f"include: {template}\ntask: {uid}\ndataset_kwargs:\n  folder: {GROUP}\n  name: {uid}\n"
            )
        members = "".join(f"  - {uid}\n" for uid in PARADIGMS)
        (tmp / f"{GROUP}.yaml").write_text(
            f"group: {GROUP}\ntask:\n{members}aggregate_metric_list:\n  - metric: acc\n    aggregation: mean\n"
            "    weight_by_size: true\nmetadata:\n  version: 1.0\n"
        )
    return Path(out)
