"""Running a sweep: evaluate every (checkpoint, alpha) cell not done yet.

Fixed costs are paid once per process: lm-eval indexes only the sweep's task folders, the tasks
(datasets, prompts) are loaded once, each checkpoint pair is read once and re-merged in place
for each alpha, and all tasks' requests of a cell are scored together (one ``evaluate``).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from functools import partial
from pathlib import Path
from unittest import mock

import numpy
from tqdm.auto import tqdm

from ..errors import BabyMergeError
from ..publish import output_errors, write_file_atomic
from .pairing import checkpoint_pairs, words_seen
from .store import (
    CELLS,
    SETTINGS,
    append_cell,
    check_model_args,
    check_settings,
    checkpoint_fingerprint,
    folder_lock,
    read_cells,
    sweep_settings,
    write_reports,
)
from .task_index import check_tasks_are_local, plotted_tasks, resolve_include_path
from .workers import claim, current_worker, single_process_env, untouched, work_order


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
    shard: str | tuple[int, int] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Evaluate every (checkpoint, alpha) cell not done yet; return all cells.

    ``include_path`` defaults to the project's own tasks (:func:`default_include_path`).
    Several processes may run this at once into one ``out`` (``torchrun`` / ``accelerate
    launch`` ranks, ``shard`` ``"K/N"`` or a Slurm array's task): each computes a share of the
    cells (``workers``); the returned cells are those recorded when this process finished.
    """
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise BabyMergeError("no tasks to sweep: give --tasks, e.g. blimp,winoground")
    model_args = check_model_args(model_args)
    worker = current_worker(shard)
    include_path = resolve_include_path(include_path)
    pairs = checkpoint_pairs(mm_run, lang_run, checkpoints)
    settings = sweep_settings(mm_run, lang_run, tasks, include_path, limit, model_args)
    fingerprints = {
        name: {
            "mm": str(m), "lang": str(l), "mm_fingerprint": checkpoint_fingerprint(m),
            "lang_fingerprint": checkpoint_fingerprint(l), "words_seen": words_seen(m),
            "mm_words_seen": words_seen(m, exact=True), "lang_words_seen": words_seen(l, exact=True),
        }
        for name, m, l in pairs
    }  # fmt: skip

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BabyMergeError(f"`out` {str(out)!r} is a file, not a sweep folder; choose another `out`")
    if out.is_dir():
        check_settings(out, settings, fingerprints)  # a mismatch is refused at once (checked again under the lock)
    # Only the folders given (not lm-eval's ~15k built-in tasks, the longest fixed cost) unless
    # the user allows lm-eval's own tasks.
    task_manager = TaskManager(include_path=include_path, include_defaults=allow_hub_tasks)
    if not allow_hub_tasks:
        check_tasks_are_local(task_manager, tasks, include_path)
    with output_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        record = check_settings(out, settings, fingerprints)
        record["checkpoints"] = {**record.get("checkpoints", {}), **fingerprints}
        record["alphas"] = sorted(set(record.get("alphas", [])) | set(alphas))
        with output_errors(out):
            write_file_atomic(out / SETTINGS, json.dumps(record, indent=2) + "\n")
    device = worker.device()
    if device is not None and "device" not in model_args:
        model_args = {**model_args, "device": device}
    return _run_cells(out, pairs, alphas, tasks, task_manager, limit, model_args, worker, progress)


# The plots (tens of panels for a suite: seconds each time) are redrawn while cells finish only
# this many seconds after they were last drawn (or the first cell finished), and at the end;
# results.csv / results.jsonl after every cell.
PLOT_EVERY = 120.0


def _run_cells(out, pairs, alphas, tasks, task_manager, limit, model_args, worker, progress) -> list[dict]:
    from ..lm_eval_model import BabyMergeLM

    plotted = plotted_tasks(task_manager, tasks)
    order = [name for name, _, _ in pairs]
    done = {(c["checkpoint"], c["alpha"]) for c in read_cells(out)}  # warns once about damaged lines
    grid = [(name, m, l, a) for name, m, l in pairs for a in alphas]
    own, others = work_order(grid, worker)
    todo = [(cell, cell in own) for cell in own + others if cell[::3] not in done]
    bar = tqdm(total=len(todo), desc="sweep cells", unit="cell", disable=not progress or worker.local_rank != 0)
    loaded, lm, last_plot, helped = None, None, None, set()
    for (name, mm_ckpt, lang_ckpt, alpha), is_own in todo:
        if not is_own and name not in helped and not untouched(out, name):
            bar.update(1)
            continue  # another process works on this pair: it is theirs
        helped.add(name)
        with claim(out, name, alpha) as held:
            # a cell is computed by the holder of its claim only, and only if no one recorded it
            # meanwhile (whoever did so appended it before letting the claim go)
            if held and (name, alpha) not in {(c["checkpoint"], c["alpha"]) for c in read_cells(out, warn=False)}:
                if loaded is None:
                    loaded = task_manager.load(tasks)  # once per process: datasets, prompts, metrics
                if lm is None or lm.pretrained != str(mm_ckpt) or lm.lang_ckpt != str(lang_ckpt):
                    lm = None  # the previous pair's model goes before the next is built
                    with single_process_env():
                        lm = BabyMergeLM(pretrained=str(mm_ckpt), lang_ckpt=str(lang_ckpt), alpha=alpha,
                                         keep_sources=True, **model_args)  # fmt: skip
                elif lm.alpha != alpha:
                    lm.set_alpha(alpha)
                results = evaluate_cell(lm, loaded, limit)
                cell = {"checkpoint": name, "words_seen": words_seen(mm_ckpt), "alpha": alpha,
                        "mm": str(mm_ckpt), "lang": str(lang_ckpt), "results": results}  # fmt: skip
                with folder_lock(out):
                    append_cell(out, cell)
                    cells = read_cells(out, warn=False)
                    plots = last_plot is not None and time.monotonic() - last_plot >= PLOT_EVERY
                    write_reports(out, cells, plotted, order, plots=plots)
                    if plots or last_plot is None:
                        last_plot = time.monotonic()
        bar.update(1)
    bar.close()
    lm = None
    with folder_lock(out):  # the last worker to get here writes the reports of the whole grid
        cells = read_cells(out, warn=False)
        write_reports(out, cells, plotted, order, plots=not _plots_fresh(out))
    return cells


def _plots_fresh(out: Path) -> bool:
    """Whether the plots were drawn after the last cell was recorded (by any process)."""
    plot, cells = out / "score_vs_alpha.png", out / CELLS
    return plot.is_file() and cells.is_file() and plot.stat().st_mtime_ns >= cells.stat().st_mtime_ns


def evaluate_cell(lm, loaded: dict, limit) -> dict:
    """lm-eval's ``results`` for one cell, as ``lm_eval.simple_evaluate`` computes them (the same
    seeds, zero-shot unless a task says otherwise), on tasks loaded once for the whole sweep.
    Every cell asks the same requests (same documents, limit and prompts): they are built by the
    first cell and handed to the next ones with their answers cleared."""
    import lm_eval.api.task
    import lm_eval.evaluator
    from lm_eval.defaults import DEFAULT_OTHER_SEED, DEFAULT_RANDOM_SEED
    from lm_eval.utils import set_torch_seed

    random.seed(DEFAULT_RANDOM_SEED)
    numpy.random.seed(DEFAULT_OTHER_SEED)
    set_torch_seed(DEFAULT_OTHER_SEED)
    for task in loaded["tasks"].values():
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)
    with contextlib.ExitStack() as stack:
        # lm-eval draws a bar per task and cell while building requests (hundreds in a suite's
        # sweep); the sweep's own bar counts cells instead
        stack.enter_context(mock.patch.object(lm_eval.api.task, "tqdm", partial(tqdm, disable=True)))
        for task in loaded["tasks"].values():
            built = getattr(task, "_instances", None)  # (unset before a ConfigurableTask's first build)
            if built:  # built by an earlier cell: the same requests, their answers cleared
                for instance in built:
                    instance.resps, instance.filtered_resps = [], {}
                stack.enter_context(mock.patch.object(task, "build_all_requests", lambda **_: None))
        # the cells keep lm-eval's results only, not its per-sample logs
        return lm_eval.evaluator.evaluate(lm=lm, task_dict=loaded, limit=limit, log_samples=False)["results"]
