"""What a sweep covers: alphas (``--alphas``) and checkpoint pairs of two training runs.

Word-count checkpoints (``chck_<N>M``) pair by the milestone they were saved at, others by name;
pairs come in training order (words seen, then step, then the name's numbers).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..babylm.checkpoints import checkpoint_words
from ..errors import BabyMergeError


def parse_alphas(text: str) -> list[float]:
    """``"0,0.3,1"`` or a range ``"start:stop:step"`` (stop included), e.g. ``"0:1:0.1"``."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
        else:
            values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BabyMergeError(f"--alphas takes numbers like 0,0.3,1 or a range 0:1:0.1, got {text!r}") from None
    if ":" in text:
        if not step > 0 or not stop >= start:
            raise BabyMergeError(
                f"--alphas {text!r}: a range start:stop:step needs step > 0 and stop >= start, e.g. 0:1:0.1"
            )
        values = [round(start + i * step, 10) for i in range(int(round((stop - start) / step)) + 1)]
    bad = [a for a in values if not 0 <= a <= 1]
    if not values or bad:
        raise BabyMergeError(f"--alphas must be numbers in [0, 1], got {text!r}")
    return list(dict.fromkeys(values))


def _trainer_state(path: Path) -> dict:
    state = path / "trainer_state.json"
    if not state.is_file():
        return {}
    try:
        value = json.loads(state.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BabyMergeError(f"{state} is not valid JSON ({err}); fix or remove it") from None
    return value if isinstance(value, dict) else {}


def words_seen(path: Path, exact: bool = False) -> int | None:
    """Words behind a checkpoint: the milestone of a ``chck_<N>M`` name (N million: where a pair
    sits on the words axis, the same for both runs) or, ``exact``, the count ``trainer_state.json``
    recorded (train/ saves at the first step past the milestone); each falls back on the other;
    None when neither is known."""
    path = Path(path)
    value = _trainer_state(path).get("words_seen")
    recorded = int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    named = checkpoint_words(path.name)
    return (recorded if recorded is not None else named) if exact else (named if named is not None else recorded)


def _checkpoint_order(path: Path):
    """Training progress first (words seen, then ``global_step`` of ``trainer_state.json``), then the name's numbers."""
    words, step = words_seen(path, exact=True), _trainer_state(path).get("global_step")
    return (words is None, words or 0, step is None, step or 0,
            [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)])  # fmt: skip


def find_checkpoints(run: str | Path) -> dict[str, Path]:
    """A checkpoint directory itself, or the checkpoint directories inside a run directory
    (hidden ones, e.g. a checkpoint being written under a temporary name, are not checkpoints)."""
    run = Path(run)
    if (run / "config.json").is_file():
        return {run.name: run}
    if not run.is_dir():
        raise BabyMergeError(f"{str(run)!r} is neither a checkpoint nor a run directory")
    found = {p.name: p for p in run.iterdir() if not p.name.startswith(".") and (p / "config.json").is_file()}
    if not found:
        raise BabyMergeError(f"no checkpoints (directories with config.json) in {str(run)!r}")
    return dict(sorted(found.items(), key=lambda kv: _checkpoint_order(kv[1])))


def _pairing_key(name: str, path: Path):
    """Word-count checkpoints pair by the milestone they were saved at (both runs follow the same
    schedule; their exact ``words_seen`` differ by the last step's overshoot), others by name."""
    m = checkpoint_words(path.name)
    return ("words", m) if m is not None else ("name", name)


def checkpoint_pairs(mm_run, lang_run, which: str = "all") -> list[tuple[str, Path, Path]]:
    """(name, multimodal, language-only) pairs in training order.

    ``chck_<N>M`` checkpoints are paired by words seen (their milestone, so ``chck_10M`` with
    ``chck_10M`` even if one run wrote ``chck_10.0M``), other checkpoints by name. ``which``:
    ``all``, ``latest``, ``words`` (only the word-count checkpoints) or a comma-separated list.
    """
    mm, lang = find_checkpoints(mm_run), find_checkpoints(lang_run)
    if len(mm) == 1 and len(lang) == 1:  # two single checkpoints: pair them whatever their names
        (name, m), (_, l) = next(iter(mm.items())), next(iter(lang.items()))
        return [(name, m, l)]
    lang_by_key = {_pairing_key(n, p): p for n, p in lang.items()}
    pairs = {n: (p, lang_by_key[_pairing_key(n, p)]) for n, p in mm.items() if _pairing_key(n, p) in lang_by_key}
    if not pairs:
        raise BabyMergeError(
            f"no checkpoints in common (same name, or same chck_<N>M words seen): "
            f"multimodal {list(mm)} vs language-only {list(lang)}"
        )
    common = list(pairs)
    if which == "latest":
        common = common[-1:]
    elif which == "words":
        common = [n for n in common if checkpoint_words(pairs[n][0].name) is not None]
        if not common:
            raise BabyMergeError(
                f"--checkpoints words: no word-count checkpoints (chck_<N>M) in both runs; available: {list(pairs)}"
            )
    elif which != "all":
        wanted = [w.strip() for w in which.split(",") if w.strip()]
        missing = [w for w in wanted if w not in common]
        if missing:
            raise BabyMergeError(f"--checkpoints {missing} not found in both runs; available: {common}")
        common = wanted
    return [(name, *pairs[name]) for name in common]
