"""Alpha sweeps: evaluate every (checkpoint, alpha) cell, tidy results, and plots.

    babymerge sweep --mm runs/mm --lang runs/lang --alphas 0:1:0.1 --checkpoints all \\
        --tasks blimp,winoground --include-path lm_eval_tasks --out sweeps/x

For each checkpoint pair both checkpoints are read once (``merge(..., keep_sources=True)``)
and the merge is redone in place for each alpha (``BabyMergeLM.set_alpha``); every cell is
evaluated through lm-eval's Python API with the ``babymerge`` adapter. Finished cells are
recorded in ``cells.jsonl`` as they complete, so an interrupted sweep resumes where it
stopped. After each cell the tidy ``results.csv`` / ``results.jsonl`` (one row per
checkpoint x alpha x task x metric, with stderr) and the plots are rewritten atomically:
``score_vs_alpha.png`` (one panel per task and metric, one line per checkpoint) and, when
language tasks (swept tasks with an ``acc``, e.g. BLiMP; their mean) and a Winoground task
are both swept, ``tradeoff.png`` (one against the other, one curve per checkpoint,
labelled with alpha).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

from tqdm.auto import tqdm

from .errors import BabyMergeError
from .output import write_file_atomic

CELLS = "cells.jsonl"


# -- what to sweep -----------------------------------------------------------------------------
def parse_alphas(text: str) -> list[float]:
    """``"0,0.3,1"`` or a range ``"start:stop:step"`` (stop included), e.g. ``"0:1:0.1"``."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            n = int(round((stop - start) / step))
            values = [round(start + i * step, 10) for i in range(n + 1)]
        else:
            values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BabyMergeError(f"--alphas takes numbers like 0,0.3,1 or a range 0:1:0.1, got {text!r}") from None
    bad = [a for a in values if not 0 <= a <= 1]
    if not values or bad:
        raise BabyMergeError(f"--alphas must be numbers in [0, 1], got {text!r}")
    return values


def _checkpoint_order(path: Path):
    """Training progress first (``trainer_state.json``, written by train/), then the name's numbers."""
    state = path / "trainer_state.json"
    step = json.loads(state.read_text()).get("global_step") if state.is_file() else None
    return (step is None, step or 0, [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)])


def find_checkpoints(run: str | Path) -> dict[str, Path]:
    """A checkpoint directory itself, or the checkpoint directories inside a run directory."""
    run = Path(run)
    if (run / "config.json").is_file():
        return {run.name: run}
    if not run.is_dir():
        raise BabyMergeError(f"{str(run)!r} is neither a checkpoint nor a run directory")
    found = {p.name: p for p in run.iterdir() if (p / "config.json").is_file()}
    if not found:
        raise BabyMergeError(f"no checkpoints (directories with config.json) in {str(run)!r}")
    return dict(sorted(found.items(), key=lambda kv: _checkpoint_order(kv[1])))


def checkpoint_pairs(mm_run, lang_run, which: str = "all") -> list[tuple[str, Path, Path]]:
    """(name, multimodal, language-only) pairs, matched by checkpoint name."""
    mm, lang = find_checkpoints(mm_run), find_checkpoints(lang_run)
    if len(mm) == 1 and len(lang) == 1:  # two single checkpoints: pair them whatever their names
        (name, m), (_, l) = next(iter(mm.items())), next(iter(lang.items()))
        return [(name, m, l)]
    common = [name for name in mm if name in lang]
    if not common:
        raise BabyMergeError(f"no checkpoint names in common: multimodal {list(mm)} vs language-only {list(lang)}")
    if which == "latest":
        common = common[-1:]
    elif which != "all":
        wanted = [w.strip() for w in which.split(",")]
        missing = [w for w in wanted if w not in common]
        if missing:
            raise BabyMergeError(f"--checkpoints {missing} not found in both runs; available: {common}")
        common = wanted
    return [(name, mm[name], lang[name]) for name in common]


# -- results -----------------------------------------------------------------------------------
def tidy_rows(checkpoint: str, alpha: float, results: dict) -> list[dict]:
    """lm-eval's ``results`` dict -> one row per task and metric (``acc,none`` style keys)."""
    rows = []
    for task, metrics in sorted(results.items()):
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({"checkpoint": checkpoint, "alpha": alpha, "task": task, "metric": metric, "filter": filt,
                         "value": float(value), "stderr": float(stderr) if isinstance(stderr, (int, float)) else None})  # fmt: skip
    return rows


def read_cells(out: Path) -> list[dict]:
    path = out / CELLS
    if not path.is_file():
        return []
    cells = []
    for line in path.read_text().splitlines():
        try:
            cells.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash: that cell is simply redone
            continue
    return cells


def write_reports(out: Path, cells: list[dict], tasks: list[str]) -> None:
    rows = [row for cell in cells for row in tidy_rows(cell["checkpoint"], cell["alpha"], cell["results"])]
    write_file_atomic(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["checkpoint", "alpha", "task", "metric", "filter", "value", "stderr"])
    writer.writeheader()
    writer.writerows(rows)
    write_file_atomic(out / "results.csv", buf.getvalue())
    plot(out, rows, tasks)


DIAGNOSTIC_METRICS = ("ties",)


# -- plots -------------------------------------------------------------------------------------
def plot(out: Path, rows: list[dict], tasks: list[str]) -> None:
    """score_vs_alpha.png and, with BLiMP and Winoground, tradeoff.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # "ties" (pairs scored equal: a diagnostic of broken models) stays in the CSV, not the plots
    panels = sorted({(r["task"], r["metric"]) for r in rows if r["task"] in tasks and r["metric"] not in DIAGNOSTIC_METRICS})
    if not panels:
        return
    checkpoints = list(dict.fromkeys(r["checkpoint"] for r in rows))
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.4 * nrows), squeeze=False)
    for ax, (task, metric) in zip(axes.flat, panels):
        for ckpt in checkpoints:
            pts = sorted((r["alpha"], r["value"], r["stderr"] or 0.0) for r in rows if (r["task"], r["metric"], r["checkpoint"]) == (task, metric, ckpt))
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

    language = [(t, "acc") for t in tasks if "winoground" not in t and (t, "acc") in panels]
    vision = next(((t, m) for t in tasks if "winoground" in t for m in ("group_score", "acc") if (t, m) in panels), None)
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
        ax.set_xlabel(f"accuracy: {', '.join(t for t, _ in language)}" if len(language) == 1 else f"mean accuracy of {len(language)} language tasks")
        ax.set_ylabel(f"{vision[0]} {vision[1]}")
        ax.set_title("BLiMP vs Winoground across alpha")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        _save(fig, out / "tradeoff.png")
    plt.close("all")


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_file_atomic(path, buf.getvalue())


# -- running -----------------------------------------------------------------------------------
def sweep(
    mm_run,
    lang_run,
    alphas: list[float],
    tasks: list[str],
    out,
    *,
    checkpoints: str = "all",
    include_path: str | list[str] | None = None,
    limit: int | float | None = None,
    model_args: dict | None = None,
    progress: bool = True,
) -> list[dict]:
    """Evaluate every (checkpoint, alpha) cell not done yet; return all cells."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from .lm_eval_model import BabyMergeLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = checkpoint_pairs(mm_run, lang_run, checkpoints)
    cells = read_cells(out)
    done = {(c["checkpoint"], c["alpha"]) for c in cells}
    todo = [(name, m, l, a) for name, m, l in pairs for a in alphas if (name, a) not in done]
    if isinstance(include_path, str):
        include_path = [p for p in include_path.split(os.pathsep) if p]
    task_manager = TaskManager(include_path=include_path)
    bar = tqdm(total=len(todo), desc="sweep cells", unit="cell", disable=not progress)
    for name, mm_ckpt, lang_ckpt in pairs:
        mine = [a for n, _, _, a in todo if n == name]
        if not mine:
            continue
        lm = BabyMergeLM(pretrained=str(mm_ckpt), lang_ckpt=str(lang_ckpt), alpha=mine[0], keep_sources=True, **(model_args or {}))
        for alpha in mine:
            lm.set_alpha(alpha)
            result = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=task_manager, limit=limit)
            cell = {"checkpoint": name, "alpha": alpha, "mm": str(mm_ckpt), "lang": str(lang_ckpt), "results": result["results"]}
            with open(out / CELLS, "a") as f:
                f.write(json.dumps(cell, default=str) + "\n")
            cells.append(cell)
            write_reports(out, cells, tasks)
            bar.update(1)
        del lm
    bar.close()
    if not todo:
        write_reports(out, cells, tasks)
    return cells
