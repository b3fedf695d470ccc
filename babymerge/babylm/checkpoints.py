"""The word-count checkpoint schedule and the ``chck_<N>M`` names.

The BabyLM 2025 schedule saves a checkpoint every 1M words seen up to 10M, every 10M up to
100M, every 100M up to 1000M. The evaluation pipeline names these revisions ``chck_<N>M``, N
the threshold in millions of words. ``train/`` writes them, ``babymerge sweep`` pairs and
orders them, the 2025 submission lists fast results by them.

A smaller schedule (a tiny run's thousands of words) keeps the rule: N in decimal without
trailing zeros, ``chck_0.001M`` for 1,000 words, ``chck_0.0125M`` for 12,500, down to one
word (six decimals). ``checkpoint_words`` reads a name back exactly, in integer arithmetic.
"""

from __future__ import annotations

import re

MILLION = 1_000_000
_NAME = re.compile(r"chck_([0-9]+)(?:\.([0-9]+))?M")
BABYLM2025_SCHEDULE = [*range(1, 10), *range(10, 100, 10), *range(100, 1001, 100)]  # in units (1M words)


def word_thresholds(word_checkpoints, unit: int) -> list[int]:
    """The word counts to checkpoint at: the 2025 schedule in ``unit`` words, none, or a list."""
    if word_checkpoints == "babylm2025":
        return [n * unit for n in BABYLM2025_SCHEDULE]
    return [] if word_checkpoints == "none" else list(word_checkpoints)


def word_checkpoint_name(words: int) -> str:
    """``chck_<N>M``, N = ``words`` in millions, in decimal without trailing zeros."""
    whole, part = divmod(int(words), MILLION)
    return f"chck_{whole}M" if not part else f"chck_{whole}.{part:06d}".rstrip("0") + "M"


def checkpoint_words(name: str) -> int | None:
    """The words a ``chck_<N>M`` name stands for (``chck_0.001M`` -> 1000, ``chck_10.0M`` ->
    10,000,000); None for any other name, and for an N that is not a whole number of words."""
    m = _NAME.fullmatch(name)
    part = (m[2] or "").rstrip("0") if m else ""
    if not m or len(part) > 6:
        return None
    return int(m[1]) * MILLION + int(part.ljust(6, "0"))


# The revisions of the 2025 pipeline's fast evaluation, in its order (collate_preds.py): the
# strict-small track stops at 100M words; the other tracks, the multimodal one included, go to 1000M.
FAST_REVISIONS = [word_checkpoint_name(n * MILLION) for n in BABYLM2025_SCHEDULE]
STRICT_SMALL_FAST_REVISIONS = [word_checkpoint_name(n * MILLION) for n in BABYLM2025_SCHEDULE if n <= 100]


def fast_revisions(track: str = "multimodal") -> list[str]:
    """The checkpoints of fast evaluation of a track, in the pipeline's order."""
    return list(STRICT_SMALL_FAST_REVISIONS if track == "strict-small" else FAST_REVISIONS)
