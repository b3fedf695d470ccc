"""The sweep's plots, drawn from its tidy rows (``store.tidy_rows``).

``score_vs_alpha.png``: one panel per task and metric, one line per checkpoint; ``tradeoff.png``:
language tasks (mean ``acc``) against a Winoground task, one curve per checkpoint, labelled with
alpha; ``score_vs_words.png``: words seen on a log x-axis, one line per alpha.
"""

from __future__ import annotations

import io
from pathlib import Path

from ..publish import write_file_atomic

# Kept in the CSV, not drawn: "ties" (pairs scored equal, a diagnostic of broken models) and
# "acc_pipeline" (the BabyLM pipelines' accuracy, a tie counted right: "acc" plus the ties;
# babymerge.babylm.scoring).
DIAGNOSTIC_METRICS = ("ties", "acc_pipeline")


def plot(out: Path, rows: list[dict], tasks: list[str]) -> None:
    """score_vs_alpha.png and, with BLiMP and Winoground, tradeoff.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted(
        {(r["task"], r["metric"]) for r in rows if r["task"] in tasks and r["metric"] not in DIAGNOSTIC_METRICS}
    )
    if not panels:
        return
    checkpoints = list(dict.fromkeys(r["checkpoint"] for r in rows))
    fig, axes = _panel_grid(plt, len(panels))
    for ax, (task, metric) in zip(axes.flat, panels):
        for ckpt in checkpoints:
            pts = sorted(
                (r["alpha"], r["value"], r["stderr"] or 0.0)
                for r in rows
                if (r["task"], r["metric"], r["checkpoint"]) == (task, metric, ckpt)
            )
            if pts:
                xs, ys, es = zip(*pts)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=2, label=ckpt)
        ax.set_title(f"{task}: {metric}")
        ax.set_xlabel("alpha (weight of the language-only model)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    _save(fig, out / "score_vs_alpha.png")
    plot_words(out, rows, panels)

    language = [(t, "acc") for t in tasks if "winoground" not in t and (t, "acc") in panels]
    vision = next(
        ((t, m) for t in tasks if "winoground" in t for m in ("group_score", "acc") if (t, m) in panels), None
    )
    if language and vision:
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        for ckpt in checkpoints:
            by_alpha: dict[float, dict] = {}
            for r in rows:
                if r["checkpoint"] == ckpt and (r["task"], r["metric"]) in (*language, vision):
                    by_alpha.setdefault(r["alpha"], {})[(r["task"], r["metric"])] = r["value"]
            pts = sorted(
                (a, sum(v[k] for k in language) / len(language), v[vision])
                for a, v in by_alpha.items() if all(k in v for k in (*language, vision))
            )  # fmt: skip
            if pts:
                alphas, xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", label=ckpt)
                for a, x, y in pts:
                    ax.annotate(f"{a:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize="x-small")
        ax.set_xlabel(
            f"accuracy: {', '.join(t for t, _ in language)}"
            if len(language) == 1
            else f"mean accuracy of {len(language)} language tasks"
        )
        ax.set_ylabel(f"{vision[0]} {vision[1]}")
        ax.set_title("BLiMP vs Winoground across alpha")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        _save(fig, out / "tradeoff.png")
    plt.close("all")


def plot_words(out: Path, rows: list[dict], panels: list[tuple[str, str]]) -> None:
    """score_vs_words.png: each task and metric against words seen (log x-axis), one line per
    alpha, as the paper reads the effect of merging across training. Drawn from two checkpoints
    with a known words-seen count."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    rows = [r for r in rows if r["words_seen"] and (r["task"], r["metric"]) in panels]
    if len({r["words_seen"] for r in rows}) < 2:
        return
    alphas = sorted({r["alpha"] for r in rows})
    words = sorted({r["words_seen"] for r in rows})
    fig, axes = _panel_grid(plt, len(panels))
    for ax, (task, metric) in zip(axes.flat, panels):
        for alpha in alphas:
            pts = sorted(
                (r["words_seen"], r["value"], r["stderr"] or 0.0)
                for r in rows if (r["task"], r["metric"], r["alpha"]) == (task, metric, alpha)
            )  # fmt: skip
            if pts:
                xs, ys, es = zip(*pts)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=2, label=f"alpha={alpha:g}")
        ax.set_xscale("log")
        if len(words) <= 8:  # few checkpoints: a tick at each, "25k"; else the log axis's own decades
            ax.set_xticks(words)
            ax.minorticks_off()
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_title(f"{task}: {metric}")
        ax.set_xlabel("words seen")
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    _save(fig, out / "score_vs_words.png")


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_file_atomic(path, buf.getvalue())


def _panel_grid(plt, n: int):
    """A figure with ``n`` panels, at most three to a row."""
    cols = min(3, n)
    nrows = -(-n // cols)
    return plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.4 * nrows), squeeze=False)
