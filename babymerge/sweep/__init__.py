"""Alpha sweeps: evaluate every (checkpoint, alpha) cell, tidy results, and plots.

    babymerge sweep --mm runs/mm --lang runs/lang --alphas 0:1:0.1 --checkpoints all \\
        --tasks blimp,winoground --include-path lm_eval_tasks --out sweeps/x

For each checkpoint pair the merged model is built once (``merge(..., keep_sources=True)``)
and the merge is redone in place for each alpha (``BabyMergeLM.set_alpha``, reading both
checkpoints again chunk by chunk: no copy of them is held in memory); every cell is
evaluated through lm-eval's Python API with the ``babymerge`` adapter. Finished cells are
recorded in ``cells.jsonl`` as they complete, so an interrupted sweep resumes where it
stopped. After each cell the tidy ``results.csv`` / ``results.jsonl`` (one row per
checkpoint x alpha x task x metric, with stderr) are rewritten atomically, and the plots at
the end (and every few minutes meanwhile):
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
mixing results. Several processes may sweep into one folder at once (torchrun / accelerate
ranks, ``--shard K/N``, Slurm arrays; ``workers``): each cell is claimed by one of them.

Modules: ``pairing`` (alphas, checkpoint pairs), ``task_index`` (which tasks, checked local),
``store`` (cells, tidy results, settings and fingerprints, the folder lock), ``plots``,
``workers`` (who takes which cell), ``runner``.
"""

from .pairing import checkpoint_pairs, find_checkpoints, parse_alphas, words_seen
from .plots import DIAGNOSTIC_METRICS, plot, plot_words
from .runner import sweep
from .store import (
    CELLS,
    COLUMNS,
    LOCK,
    SETTINGS,
    append_cell,
    check_model_args,
    check_settings,
    checkpoint_fingerprint,
    read_cells,
    sweep_settings,
    tidy_rows,
    write_reports,
)
from .task_index import check_tasks_are_local, default_include_path, plotted_tasks, resolve_include_path

__all__ = [
    "CELLS", "COLUMNS", "DIAGNOSTIC_METRICS", "LOCK", "SETTINGS", "append_cell", "check_model_args",
    "check_settings", "check_tasks_are_local", "checkpoint_fingerprint", "checkpoint_pairs", "default_include_path",
    "find_checkpoints", "parse_alphas", "plot", "plot_words", "plotted_tasks",
    "read_cells", "resolve_include_path", "sweep", "sweep_settings", "tidy_rows", "words_seen", "write_reports",
]  # fmt: skip
