"""Alpha sweeps: evaluate every (checkpoint, alpha) cell, tidy results, and plots.

    babymerge sweep --mm runs/mm --lang runs/lang --alphas 0:1:0.1 --checkpoints all \\
        --tasks blimp,winoground --include-path lm_eval_tasks --out sweeps/x

For each checkpoint pair the merged model is built once (``merge(..., keep_sources=True)``)
and the merge is redone in place for each alpha (``BabyMergeLM.set_alpha``, reading both
checkpoints again chunk by chunk: no copy of them is held in memory); every cell is
evaluated through lm-eval's Python API with the ``babymerge`` adapter. Finished cells are
recorded in ``cells.jsonl`` as they complete, so an interrupted sweep resumes where it
stopped. After each cell the tidy ``results.csv`` / ``results.jsonl`` (one row per
checkpoint x alpha x task x metric, with stderr) and the plots are rewritten atomically:
``score_vs_alpha.png`` (one panel per task and metric, one line per checkpoint) and, when
language tasks (swept tasks with an ``acc``, e.g. BLiMP; their mean) and a Winoground task
are both swept, ``tradeoff.png`` (one against the other, one curve per checkpoint,
labelled with alpha); with word-count checkpoints (``chck_<N>M``, or any checkpoint whose
``trainer_state.json`` records ``words_seen``) also ``score_vs_words.png`` (words seen on a
log x-axis, one line per alpha, one panel per task and metric).

A sweep folder is one experiment: ``sweep.json`` records what it was run with (tasks,
limit, model args, include path, evaluation data, both runs and a fingerprint of every
checkpoint evaluated, the babymerge version). Rerunning into the same ``--out`` may add
alphas and checkpoints; any other difference is refused, saying what differs, instead of
mixing results. ``.sweep.lock`` (``fcntl.flock``) keeps a second sweep out of a folder in use.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from .babylm.checkpoints import checkpoint_words
from .data import evaluation_data_dir
from .errors import BabyMergeError
from .locking import exclusive_lock
from .publish import output_errors, write_file_atomic

CELLS = "cells.jsonl"
SETTINGS = "sweep.json"
LOCK = ".sweep.lock"
# model_args set by the sweep itself, and where the user sets them instead
OWNED_MODEL_ARGS = {
    "alpha": "--alphas", "pretrained": "--mm", "lang_ckpt": "--lang", "keep_sources": "(always on in a sweep)"
}  # fmt: skip
# model_args that change how fast cells are computed, not their scores: may differ on a resume
SPEED_MODEL_ARGS = {"device", "batch_size", "max_batch_size", "token_budget", "row_width"}


# -- what to sweep -----------------------------------------------------------------------------
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


def check_model_args(model_args: dict | None) -> dict:
    """The extra ``babymerge`` model_args of a sweep: refuse those the sweep sets itself."""
    model_args = dict(model_args or {})
    for key, where in OWNED_MODEL_ARGS.items():
        if key in model_args:
            raise BabyMergeError(
                f"--model-args {key}={model_args[key]}: a sweep sets {key} itself; use {where} instead"
            )
    return model_args


def _trainer_state(path: Path) -> dict:
    state = path / "trainer_state.json"
    if not state.is_file():
        return {}
    try:
        value = json.loads(state.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BabyMergeError(f"{state} is not valid JSON ({err}); fix or remove it") from None
    return value if isinstance(value, dict) else {}


def milestone(path: Path) -> int | None:
    """The words-seen milestone a ``chck_<N>M`` checkpoint was saved at (N million), else None."""
    return checkpoint_words(Path(path).name)


def words_seen(path: Path) -> int | None:
    """Words the model had seen: ``trainer_state.json``'s ``words_seen`` (written by train/), else
    the ``chck_<N>M`` name's N million, else None (an older checkpoint)."""
    value = _trainer_state(Path(path)).get("words_seen")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else milestone(path)


def _checkpoint_order(path: Path):
    """Training progress first (words seen, then ``global_step`` of ``trainer_state.json``), then the name's numbers."""
    words, step = words_seen(path), _trainer_state(path).get("global_step")
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
    m = milestone(path)
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
        common = [n for n in common if milestone(pairs[n][0]) is not None]
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


def pair_words_seen(mm_ckpt: Path, lang_ckpt: Path) -> int | None:
    """The x value of a pair on the words-seen axis: the milestone of a ``chck_<N>M`` pair (the
    same for both runs), else the multimodal checkpoint's ``words_seen``."""
    m = milestone(mm_ckpt)
    return m if m is not None else words_seen(mm_ckpt)


# -- results -----------------------------------------------------------------------------------
COLUMNS = ["checkpoint", "words_seen", "alpha", "task", "metric", "filter", "value", "stderr"]


def tidy_rows(checkpoint: str, alpha: float, results: dict, words: int | None = None) -> list[dict]:
    """lm-eval's ``results`` dict -> one row per task and metric (``acc,none`` style keys)."""
    rows = []
    for task, metrics in sorted(results.items()):
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({
                "checkpoint": checkpoint, "words_seen": words, "alpha": alpha, "task": task, "metric": metric,
                "filter": filt, "value": float(value),
                "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
            })  # fmt: skip
    return rows


def _is_cell(value) -> bool:
    return (
        isinstance(value, dict) and isinstance(value.get("checkpoint"), str) and isinstance(value.get("results"), dict)
        and isinstance(value.get("alpha"), (int, float)) and not isinstance(value.get("alpha"), bool)
    )  # fmt: skip


def read_cells(out: Path) -> list[dict]:
    """The finished cells in ``cells.jsonl``. A line that is not a whole cell (cut by a crash or
    a full disk, or edited by hand) is skipped with a warning, so its cell is evaluated again;
    a cell recorded twice counts once."""
    path = out / CELLS
    if not path.is_file():
        return []
    cells, seen = [], set()
    for line_no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            cell = json.loads(line)
        except json.JSONDecodeError:
            cell = None
        if not _is_cell(cell):
            warnings.warn(
                f"{path} line {line_no} is not a finished cell (cut short by a crash?): "
                "skipped; a cell not recorded whole is evaluated again",
                stacklevel=2,
            )
            continue
        if (cell["checkpoint"], cell["alpha"]) not in seen:
            seen.add((cell["checkpoint"], cell["alpha"]))
            cells.append(cell)
    return cells


def append_cell(out: Path, cell: dict) -> None:
    """Add one finished cell to ``cells.jsonl``, on a line of its own even after a cut-off last line.
    A write that fails (a full disk) is taken back, so it leaves no cut-off line."""
    line = (json.dumps(cell, default=str) + "\n").encode()
    with output_errors(out), open(out / CELLS, "a+b", buffering=0) as f:  # unbuffered: nothing left to flush later
        size = f.seek(0, os.SEEK_END)
        if size > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = b"\n" + line
        try:
            view = memoryview(line)
            while view:
                view = view[f.write(view) :]
            os.fsync(f.fileno())
        except OSError:
            f.truncate(size)
            raise


def write_reports(out: Path, cells: list[dict], tasks: list[str]) -> None:
    """results.jsonl / results.csv (checkpoints in the order first evaluated, then by alpha) and the plots."""
    order = {name: i for i, name in enumerate(dict.fromkeys(c["checkpoint"] for c in cells))}
    cells = sorted(cells, key=lambda c: (order[c["checkpoint"]], c["alpha"]))
    rows = [row for c in cells for row in tidy_rows(c["checkpoint"], c["alpha"], c["results"], c.get("words_seen"))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    with output_errors(out):
        write_file_atomic(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        write_file_atomic(out / "results.csv", buf.getvalue())
        plot(out, rows, tasks)


# Kept in the CSV, not drawn: "ties" (pairs scored equal, a diagnostic of broken models) and
# "acc_pipeline" (the BabyLM pipelines' accuracy, a tie counted right: "acc" plus the ties;
# babymerge.babylm.scoring).
DIAGNOSTIC_METRICS = ("ties", "acc_pipeline")


# -- plots -------------------------------------------------------------------------------------
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
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.4 * nrows), squeeze=False)
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
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.4 * nrows), squeeze=False)
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


# -- what a sweep was run with ------------------------------------------------------------------
def default_include_path() -> list[str]:
    """The project's own lm-eval tasks, found relative to the installed package (not to the
    current directory; ``babymerge.tasks_path``), so a sweep started anywhere evaluates our
    local-data tasks."""
    from .tasks import tasks_path

    return [tasks_path()]


def resolve_include_path(include_path) -> list[str]:
    """``--include-path`` as absolute folders (``os.pathsep``-separated text or a list); each must exist."""
    if include_path is None:
        return default_include_path()
    if isinstance(include_path, (str, Path)):
        include_path = [p for p in str(include_path).split(os.pathsep) if p]
    resolved = []
    for p in include_path:
        if not Path(p).is_dir():
            raise BabyMergeError(
                f"--include-path {str(p)!r} is not a directory; "
                "give the folder of task YAMLs (the project's: lm_eval_tasks)"
            )
        resolved.append(str(Path(p).resolve()))
    return resolved


# Data that is read from local files: a custom loader (our tasks), a local folder, or a
# datasets builder that reads the data_files it is given.
_LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "imagefolder", "audiofolder", "pandas"}


def check_tasks_are_local(task_manager, tasks: list[str], include_path: list[str]) -> None:
    """Refuse tasks that would quietly come from lm-eval's own task folder or the hub.

    lm-eval indexes its built-in tasks besides ``include_path``; a name our folder does not
    define (a typo, a wrong ``--include-path``, a task from another directory) is silently
    resolved to lm-eval's own task of that name, e.g. ``blimp_*`` reading ``nyu-mll/blimp``
    from the hub. So every requested task, group and tag is expanded to its leaf tasks, and each
    must be defined in a YAML under ``include_path`` and read local data.
    """
    from lm_eval.tasks._index import Kind

    index = task_manager.task_index
    roots = [Path(p) for p in include_path]
    problems: list[str] = []

    def visit(name: str, via: str, seen: set) -> None:
        if name in seen:
            return
        seen.add(name)
        entry = index.get(name)
        where = f" (in {via})" if via else ""
        if entry is None:
            problems.append(f"{name!r}{where} is not a task, group or tag of {include_path}")
            return
        if entry.kind == Kind.TAG:
            for child in sorted(entry.tags):
                visit(child, name, seen)
            return
        path = Path(entry.yaml_path).resolve() if entry.yaml_path else None
        if path is None or not any(path.is_relative_to(r) for r in roots):
            problems.append(f"{name!r}{where} is defined by lm-eval itself ({path}), not in {include_path}")
            return
        cfg = entry.cfg or {}
        if entry.kind == Kind.GROUP:
            for child in cfg.get("task", []):
                if isinstance(child, str):
                    visit(child, name, seen)
                elif isinstance(child, dict) and child.get("task") in index and set(child) <= {"task", "task_alias"}:
                    visit(child["task"], name, seen)
                elif isinstance(child, dict):  # a task defined inline in the group (or overriding one)
                    base = index[child["task"]].cfg or {} if child.get("task") in index else {}
                    check_source(str(child.get("task")), name, {**base, **child}, path)
            return
        check_source(name, via, cfg, path)

    def check_source(name: str, via: str, cfg: dict, path) -> None:
        source = cfg.get("dataset_path")
        local = source is None or source in _LOCAL_BUILDERS or Path(str(source)).expanduser().exists()
        if "custom_dataset" in cfg or local:
            return
        where = f" (in {via})" if via else ""
        problems.append(f"{name!r}{where} reads dataset_path {source!r}, not local files ({path})")

    for task in tasks:
        visit(task, "", set())
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise BabyMergeError(
            f"{'; '.join(problems[:5])}{more}: a sweep evaluates "
            "only tasks defined under --include-path that read local data; fix the task names or --include-path, "
            "or pass --allow-hub-tasks to evaluate lm-eval's own tasks"
        )


def plotted_tasks(task_manager, tasks: list[str]) -> list[str]:
    """The names the plots show: each requested task or group, except that a group or tag with
    no score of its own is replaced by its members (recursively). The BabyLM 2025 suites are
    such groups (their tasks' metrics differ: accuracy, Spearman, ΔR²), so ``--tasks
    babylm2025_fast`` plots BLiMP, EWoK, entity tracking, ... instead of nothing."""
    from lm_eval.tasks._index import Kind

    index = task_manager.task_index
    names: list[str] = []

    def add(name: str) -> None:
        entry = index.get(name)
        cfg = (entry.cfg or {}) if entry is not None else {}
        if entry is not None and entry.kind == Kind.TAG:
            members = sorted(entry.tags)
        elif entry is not None and entry.kind == Kind.GROUP and not cfg.get("aggregate_metric_list"):
            members = [c if isinstance(c, str) else c.get("task") for c in cfg.get("task", [])]
        else:
            names.append(name)
            return
        for member in members:
            add(member)

    for task in tasks:
        add(task)
    return list(dict.fromkeys(names))


def checkpoint_fingerprint(path: Path) -> str:
    """A cheap content identity of a checkpoint: config.json, trainer_state.json, and for each
    safetensors file its size, header (names, shapes, offsets) and the first and last 64 KiB of
    its data. Two different trainings differ there; a copied or moved checkpoint does not."""
    path = Path(path)
    h = hashlib.sha256()
    for name in ("config.json", "trainer_state.json"):
        if (path / name).is_file():
            h.update(name.encode() + (path / name).read_bytes())
    for weights in sorted(path.glob("*.safetensors")):
        size = weights.stat().st_size
        h.update(f"{weights.name}:{size}".encode())
        with open(weights, "rb") as f:
            h.update(f.read(65536))
            f.seek(max(0, size - 65536))
            h.update(f.read(65536))
    return h.hexdigest()[:16]


def sweep_settings(mm_run, lang_run, tasks, include_path, limit, model_args) -> dict:
    """What decides a sweep's scores, besides alphas and checkpoints (which may grow)."""
    from . import __version__

    return {
        "babymerge_version": __version__,
        "mm_run": str(Path(mm_run).resolve()),
        "lang_run": str(Path(lang_run).resolve()),
        "tasks": sorted(dict.fromkeys(tasks)),
        "limit": limit,
        "model_args": {k: v for k, v in sorted(model_args.items())},
        "include_path": include_path,
        "evaluation_data": str(evaluation_data_dir().resolve()),
    }


def check_settings(out: Path, settings: dict, fingerprints: dict) -> dict:
    """Compare with ``sweep.json``; refuse a difference that would mix results, say which."""
    path = out / SETTINGS
    if not path.is_file():
        if (out / CELLS).is_file():
            raise BabyMergeError(
                f"{out} holds cells.jsonl but no {SETTINGS} (an older babymerge wrote it): "
                "what it was run with is unknown; sweep into a new --out"
            )
        return {**settings, "alphas": [], "checkpoints": {}}
    try:
        recorded = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BabyMergeError(f"{path} is not valid JSON ({err}); sweep into a new --out") from None
    differ = []
    for key, value in settings.items():
        old = recorded.get(key)
        if key == "model_args":
            value = {k: v for k, v in value.items() if k not in SPEED_MODEL_ARGS}
            old = {k: v for k, v in (old or {}).items() if k not in SPEED_MODEL_ARGS}
        if key == "babymerge_version":
            if old != value:
                warnings.warn(f"{out} was swept with babymerge {old}, this is {value}", stacklevel=3)
            continue
        if json.loads(json.dumps(old)) != json.loads(json.dumps(value)):
            differ.append(f"{key}: recorded {old!r}, now {value!r}")
    for name, now in fingerprints.items():
        old = recorded.get("checkpoints", {}).get(name)
        for role in ("mm", "lang"):
            if old and old[f"{role}_fingerprint"] != now[f"{role}_fingerprint"]:
                differ.append(
                    f"checkpoint {name} ({role}): {now[role]} is not the checkpoint recorded ({old[role]}): "
                    "its weights changed"
                )
    if differ:
        raise BabyMergeError(
            f"{out} is a sweep run with other settings ({'; '.join(differ)}): resuming would mix results; "
            "rerun with the recorded settings or sweep into a new --out"
        )
    return {**recorded, **settings}


def sweep_lock(out: Path):
    """Hold an exclusive lock on ``out/.sweep.lock`` (released by the OS if the process dies)."""
    path = out / LOCK
    return exclusive_lock(
        path,
        lambda holder: (
            f"another sweep ({holder}) is writing to {out} (it holds {path}); "
            "wait for it to finish or choose another --out"
        ),
    )


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
    allow_hub_tasks: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Evaluate every (checkpoint, alpha) cell not done yet; return all cells.

    ``include_path`` defaults to the project's own tasks (:func:`default_include_path`).
    """
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise BabyMergeError("no tasks to sweep: give --tasks, e.g. blimp,winoground")
    model_args = check_model_args(model_args)
    include_path = resolve_include_path(include_path)
    pairs = checkpoint_pairs(mm_run, lang_run, checkpoints)
    settings = sweep_settings(mm_run, lang_run, tasks, include_path, limit, model_args)
    fingerprints = {
        name: {
            "mm": str(m), "lang": str(l), "mm_fingerprint": checkpoint_fingerprint(m),
            "lang_fingerprint": checkpoint_fingerprint(l), "words_seen": pair_words_seen(m, l),
            "mm_words_seen": words_seen(m), "lang_words_seen": words_seen(l),
        }
        for name, m, l in pairs
    }  # fmt: skip

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BabyMergeError(f"--out {str(out)!r} is a file, not a sweep folder; choose another --out")
    if out.is_dir():
        check_settings(out, settings, fingerprints)  # a mismatch is refused at once (checked again under the lock)
    task_manager = TaskManager(include_path=include_path)  # indexes every task: takes a while
    if not allow_hub_tasks:
        check_tasks_are_local(task_manager, tasks, include_path)
    with output_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    with sweep_lock(out):
        record = check_settings(out, settings, fingerprints)
        record["checkpoints"] = {**record.get("checkpoints", {}), **fingerprints}
        record["alphas"] = sorted(set(record.get("alphas", [])) | set(alphas))
        with output_errors(out):
            write_file_atomic(out / SETTINGS, json.dumps(record, indent=2) + "\n")
        return _run_cells(out, pairs, alphas, tasks, task_manager, limit, model_args, progress)


def _run_cells(out, pairs, alphas, tasks, task_manager, limit, model_args, progress) -> list[dict]:
    plotted = plotted_tasks(task_manager, tasks)
    import lm_eval

    from .lm_eval_model import BabyMergeLM

    cells = read_cells(out)
    done = {(c["checkpoint"], c["alpha"]) for c in cells}
    todo = [(name, m, l, a) for name, m, l in pairs for a in alphas if (name, a) not in done]
    bar = tqdm(total=len(todo), desc="sweep cells", unit="cell", disable=not progress)
    for name, mm_ckpt, lang_ckpt in pairs:
        mine = [a for n, _, _, a in todo if n == name]
        if not mine:
            continue
        lm = BabyMergeLM(
            pretrained=str(mm_ckpt), lang_ckpt=str(lang_ckpt), alpha=mine[0], keep_sources=True, **model_args
        )
        words = pair_words_seen(mm_ckpt, lang_ckpt)
        for alpha in mine:
            lm.set_alpha(alpha)
            result = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=task_manager, limit=limit)
            cell = {"checkpoint": name, "words_seen": words, "alpha": alpha, "mm": str(mm_ckpt), "lang": str(lang_ckpt),
                    "results": result["results"]}  # fmt: skip
            append_cell(out, cell)
            cells.append(cell)
            write_reports(out, cells, plotted)
            bar.update(1)
        del lm
    bar.close()
    if not todo:
        write_reports(out, cells, plotted)
    return cells
