"""The AoA score as the BabyLM 2025 organisers compute it, and learning-curve plots.

The method of the pipeline's ``AoAEvaluator`` (``evaluation_pipeline/utils.py``; its
``calculate_results_from_pred.py`` prints the result as "AoA"), after Chang & Bergen (2022):

* **children** (``cdi_human.csv``: a ``word`` column and the proportion of children producing it at
  ages ``16`` .. ``30`` months): ``f(x) = a / (1 + exp(-b (x - c))) + d`` fitted to the known
  proportions (at least 3) with ``p0 = [1, 0.1, mean age, 0]`` and bounds ``a in [0, 2]``,
  ``b in [0, 1]``, ``c`` within the ages, ``d in [-0.5, 0.5]``; the age of acquisition is where f
  crosses 0.5, kept if it lies within the ages;
* **the model**: every row of the word in ``surprisal.json`` (all contexts of all checkpoints,
  NaN dropped) is one point ``(log10(words + 1), -surprisal)``; the same sigmoid is fitted without
  bounds from ``p0 = [range, 1, mean, min]``; the threshold is halfway between "chance",
  ``log2(300000)``, and the word's lowest surprisal (log2 beside surprisals in nats: the organisers'
  choice, kept); the model's AoA is the ``log10(words + 1)`` where the curve crosses it, kept if the
  words lie within the first and last point's;
* a word counts when both ages exist (the first CDI row of that spelling); the score
  (``curve_fitness``) is Pearson's r between model and child AoAs, 0.0 under 3 words.

Fits use ``scipy.optimize.curve_fit`` with ``maxfev=1000``; a fit that fails drops the word.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from ..errors import BabyMergeError
from ..publish import output_errors, write_file_atomic
from .checkpoints import checkpoint_words

CHILD_AGES = [str(age) for age in range(16, 31)]  # months, the CDI columns the organisers read
CHANCE_SURPRISAL = math.log2(300_000)  # "random chance" for a ~300k vocabulary
THRESHOLD = 0.5


def sigmoid(x, a, b, c, d):
    return a / (1 + np.exp(-b * (x - c))) + d


class _quiet(warnings.catch_warnings):
    """No overflow or covariance warnings from thousands of fits (a failed fit just drops a word)."""

    def __enter__(self):
        super().__enter__()
        warnings.simplefilter("ignore")
        self._errstate = np.errstate(all="ignore")
        self._errstate.__enter__()

    def __exit__(self, *exc):
        self._errstate.__exit__(*exc)
        return super().__exit__(*exc)


def _crossing(popt, y: float) -> float | None:
    """Where the fitted sigmoid reaches ``y``; None for a flat or falling fit, or ``y`` out of its range."""
    a, b, c, d = popt
    if a <= 0 or b <= 0 or not d < y < a + d:
        return None
    return c - math.log(a / (y - d) - 1) / b


def child_aoa(ages, proportions) -> float | None:
    """Age (months) at which half the children produce the word, from the CDI proportions."""
    from scipy.optimize import curve_fit

    ages, proportions = np.asarray(ages, dtype=float), np.asarray(proportions, dtype=float)
    known = ~np.isnan(proportions)
    ages, proportions = ages[known], proportions[known]
    if len(ages) < 3:
        return None
    try:
        with _quiet():
            popt, _ = curve_fit(
                sigmoid, ages, proportions, p0=[1.0, 0.1, ages.mean(), 0.0],
                bounds=([0, 0, ages[0], -0.5], [2.0, 1.0, ages[-1], 0.5]), maxfev=1000,
            )  # fmt: skip
    except Exception:  # as the organisers: any failure of the fit drops the word
        return None
    aoa = _crossing(popt, THRESHOLD)
    return aoa if aoa is not None and ages[0] <= aoa <= ages[-1] else None


def model_fit(words_seen, surprisal_values) -> dict | None:
    """The fitted learning curve of one word: ``popt`` (of -surprisal against log10(words + 1)), the
    threshold surprisal, and ``aoa`` (log10(words + 1) at the threshold, None when out of range)."""
    from scipy.optimize import curve_fit

    words, values = np.asarray(words_seen, dtype=float), np.asarray(surprisal_values, dtype=float)
    if len(values) < 3:
        return None
    known = ~np.isnan(values)
    if not known.any():
        return None
    words, values = words[known], values[known]
    threshold = CHANCE_SURPRISAL - THRESHOLD * (CHANCE_SURPRISAL - values.min())
    x, y = np.log10(words + 1), -values
    try:
        with _quiet():
            popt, _ = curve_fit(sigmoid, x, y, p0=[y.max() - y.min(), 1.0, x.mean(), y.min()], maxfev=1000)
    except Exception:  # as the organisers: any failure of the fit drops the word
        return None
    aoa = _crossing(popt, -threshold)
    if aoa is not None and not words[0] <= 10**aoa - 1 <= words[-1]:
        aoa = None
    return {"popt": [float(p) for p in popt], "threshold": float(threshold), "aoa": aoa}


def read_cdi(path) -> tuple[list[int], dict[str, list[float]]]:
    """(ages, {word: proportions}) of ``cdi_human.csv``; the first row of a word, as the organisers take it."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise BabyMergeError(f"--cdi {path}: not a readable CSV file ({err})") from None
    columns = [c for c in CHILD_AGES if c in frame.columns]
    if "word" not in frame.columns or not columns:
        raise BabyMergeError(f"--cdi {path}: needs a 'word' column and age columns '16' .. '30' (cdi_human.csv)")
    table = {}
    for word, row in zip(frame["word"], frame[columns].to_numpy(dtype=float)):
        table.setdefault(word, row.tolist())
    return [int(c) for c in columns], table


def learning_curves(surprisal: dict) -> dict[str, tuple[list[float], list[float]]]:
    """{word: (words seen, surprisal) of every row}, words in order of first appearance."""
    curves: dict[str, tuple[list, list]] = {}
    for row in surprisal["results"]:
        words = checkpoint_words(str(row["step"]))
        if words is None:
            raise BabyMergeError(f"AoA step {row['step']!r} is not a chck_<N>M name (words seen)")
        xs, ys = curves.setdefault(row["target_word"], ([], []))
        xs.append(float(words))
        ys.append(float(row["surprisal"]))
    return curves


def aoa_score(surprisal: dict, cdi_path) -> dict:
    """``curve_fitness`` (Pearson's r of model vs child AoAs), its p-value, and the words behind it."""
    from scipy.stats import pearsonr

    ages, cdi = read_cdi(cdi_path)
    words, model, child = [], [], []
    for word, (xs, ys) in learning_curves(surprisal).items():
        if word not in cdi:
            continue
        human = child_aoa(ages, cdi[word])
        if human is None:
            continue
        fit = model_fit(xs, ys)
        if fit is None or fit["aoa"] is None:
            continue
        words.append(word)
        model.append(float(fit["aoa"]))
        child.append(float(human))
    if len(words) < 3:
        return {
            "curve_fitness": 0.0,
            "n_words": len(words),
            "valid_words": words,
            "model_aoas": model,
            "child_aoas": child,
        }
    r, p = pearsonr(model, child)
    return {"curve_fitness": float(r), "p_value": float(p), "n_words": len(words), "valid_words": words,
            "model_aoas": model, "child_aoas": child}  # fmt: skip


def plot(surprisal: dict, score: dict, path: Path, n_words: int = 5) -> None:
    """``learning_curves.png``: a few words' surprisals against words seen with their fitted curves and
    AoA (words spread over the children's ages), and model against child AoA for every scored word."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = learning_curves(surprisal)
    order = sorted(range(len(score["valid_words"])), key=lambda i: score["child_aoas"][i])
    if len(order) > n_words:  # spread over the children's ages
        order = [order[round(k * (len(order) - 1) / (n_words - 1))] for k in range(n_words)]
    shown = list(dict.fromkeys(score["valid_words"][i] for i in order)) or list(curves)[:n_words]
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(3.2 * (len(shown) + 1), 3.2), squeeze=False)
    for ax, word in zip(axes[0], shown):
        xs, ys = map(np.asarray, curves[word])
        ax.scatter(xs, ys, s=6, alpha=0.3, color="tab:blue", label="contexts")
        steps = np.unique(xs)
        ax.plot(steps, [np.nanmean(ys[xs == s]) for s in steps], "o-", ms=3, color="tab:blue", label="mean")
        fit = model_fit(xs, ys)
        if fit is not None:
            grid = np.geomspace(steps[0], steps[-1], 100)
            ax.plot(grid, -sigmoid(np.log10(grid + 1), *fit["popt"]), color="tab:orange", label="fit")
            ax.axhline(fit["threshold"], color="grey", ls=":", lw=1)
            if fit["aoa"] is not None:
                ax.axvline(10 ** fit["aoa"] - 1, color="tab:red", ls="--", lw=1, label="AoA")
        ax.set_xscale("log")
        ax.set(title=word, xlabel="words seen", ylabel="surprisal (nats)")
        ax.legend(fontsize=6)
    ax = axes[0][-1]
    ax.scatter(score["child_aoas"], score["model_aoas"], s=8)
    ax.set(xlabel="child AoA (months)", ylabel="model AoA (log10 words)",
           title=f"r = {score['curve_fitness']:.3f} ({score['n_words']} words)")  # fmt: skip
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_file_atomic(path, buf.getvalue())


def write_score(surprisal: dict, cdi_path, out) -> dict:
    """Compute the score; write ``aoa_score.json`` and ``learning_curves.png`` into ``out``."""
    score = aoa_score(surprisal, cdi_path)
    out = Path(out)
    with output_errors(out):
        write_file_atomic(out / "aoa_score.json", json.dumps(score, indent=2) + "\n")
        plot(surprisal, score, out / "learning_curves.png")
    return score
