"""A sweep folder: finished cells, tidy results, what the sweep was run with, and its lock.

``cells.jsonl`` holds one line per finished (checkpoint, alpha) cell; ``results.csv`` /
``results.jsonl`` one row per checkpoint x alpha x task x metric, rewritten atomically from the
cells; ``sweep.json`` the settings and a fingerprint of every checkpoint evaluated, so a resume
with other settings is refused instead of mixing results.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import warnings
from pathlib import Path

from ..data import evaluation_data_dir
from ..errors import BabyMergeError
from ..locking import waiting_lock
from ..publish import output_errors, write_file_atomic
from .plots import plot

CELLS = "cells.jsonl"
SETTINGS = "sweep.json"
LOCK = ".sweep.lock"
# model_args set by the sweep itself, and where the user sets them instead
OWNED_MODEL_ARGS = {
    "alpha": "`alphas`", "pretrained": "`mm_run`", "lang_ckpt": "`lang_run`", "keep_sources": "nothing (always on)"
}  # fmt: skip
# model_args that change how fast cells are computed, not their scores: may differ on a resume
SPEED_MODEL_ARGS = {"device", "batch_size", "max_batch_size", "token_budget", "row_width"}


def check_model_args(model_args: dict | None) -> dict:
    """The extra ``babymerge`` model_args of a sweep: refuse those the sweep sets itself."""
    model_args = dict(model_args or {})
    for key, where in OWNED_MODEL_ARGS.items():
        if key in model_args:
            raise BabyMergeError(
                f"`model_args` {key}={model_args[key]}: a sweep sets {key} itself; use {where} instead"
            )
    return model_args


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


def read_cells(out: Path, warn: bool = True) -> list[dict]:
    """The finished cells in ``cells.jsonl``. A line that is not a whole cell (cut by a crash or
    a full disk, or edited by hand) is skipped, with a warning if ``warn``, so its cell is
    evaluated again; a cell recorded twice counts once."""
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
            if not warn:
                continue
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


def write_reports(
    out: Path, cells: list[dict], tasks: list[str], checkpoints: list[str] = (), plots: bool = True
) -> None:
    """results.jsonl / results.csv and, if ``plots``, the plots. Rows by checkpoint (``checkpoints``
    first, in their order, e.g. training order; then others in the order first evaluated), then
    alpha: the same rows however many processes computed the cells, in whatever order."""
    order = {name: i for i, name in enumerate(dict.fromkeys([*checkpoints, *(c["checkpoint"] for c in cells)]))}
    cells = sorted(cells, key=lambda c: (order[c["checkpoint"]], c["alpha"]))
    rows = [row for c in cells for row in tidy_rows(c["checkpoint"], c["alpha"], c["results"], c.get("words_seen"))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    with output_errors(out):
        write_file_atomic(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        write_file_atomic(out / "results.csv", buf.getvalue())
        if plots:
            plot(out, rows, tasks)


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
    from .. import __version__

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
                "what it was run with is unknown; sweep into a new `out`"
            )
        return {**settings, "alphas": [], "checkpoints": {}}
    try:
        recorded = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BabyMergeError(f"{path} is not valid JSON ({err}); sweep into a new `out`") from None
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
            "rerun with the recorded settings or sweep into a new `out`"
        )
    return {**recorded, **settings}


def folder_lock(out: Path):
    """Hold ``out/.sweep.lock`` for a short update of the folder's shared files (sweep.json,
    cells.jsonl, the reports), waiting for another process of the sweep that holds it."""
    return waiting_lock(out / LOCK)
