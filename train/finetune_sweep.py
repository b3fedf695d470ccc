"""GLUE across alpha: fine-tune the merge of each (checkpoint, alpha) cell, scores as sweep rows.

    python -m train.finetune_sweep --mm runs/mm --lang runs/lang --alphas 0,0.3,1 \\
        [--checkpoints latest|all|words|chck_1M,chck_10M] --data evaluation_data --tasks all --out sweeps/glue

The flags of ``babymerge sweep`` (``--mm``, ``--lang``, ``--alphas``, ``--checkpoints``: a run
folder or one checkpoint each, checkpoints paired as the sweep pairs them) and the recipe
flags of ``python -m train.finetune``. Each cell is ``python -m train.finetune --model MM --lang
LANG --alpha A`` into ``<out>/results/<checkpoint>_alpha<A>/main/finetune/<task>/`` (the
pipeline's layout, so ``collate_preds`` and ``babymerge submit --glue-results`` read it; a
rerun skips finished tasks and adds new alphas, checkpoints and tasks). After each cell
``<out>/results.csv`` and ``results.jsonl`` (the sweep's columns: checkpoint, words_seen,
alpha, task, metric, filter, value, stderr; metrics accuracy, f1, mcc as the pipeline names
them, accuracy's stderr as lm-eval computes a mean's) and the sweep's plots
(``score_vs_alpha.png``; ``score_vs_words.png`` with word-count checkpoints) are rewritten
from every cell the folder holds (``cells.jsonl``, as a sweep records its cells) and its
finished tasks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lm_eval.api.metrics import mean_stderr
from tqdm.auto import tqdm

from babymerge.errors import BabyMergeError
from babymerge.sweep import append_cell, checkpoint_pairs, parse_alphas, read_cells, words_seen, write_reports
from train import finetune
from train.glue import read_examples, task_file


def cell_name(checkpoint: str, alpha: float) -> str:
    """The model name of a cell in the results folder."""
    return f"{checkpoint}_alpha{alpha:g}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.finetune_sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--mm", required=True, help="multimodal run folder or checkpoint")
    p.add_argument("--lang", required=True, help="language-only run folder or checkpoint")
    p.add_argument("--alphas", required=True, help="weights of the language-only model: 0,0.3,1 or 0:1:0.1")
    p.add_argument("--checkpoints", default="latest", help="all, latest (default), words, or a comma-separated list")
    finetune.add_merge_arguments(p)
    finetune.add_finetune_arguments(p)
    p.add_argument("--out", required=True, help="sweep folder: results/ (the pipeline's layout), results.csv, plots")
    return p.parse_args(argv)


def cell_args(args, mm: Path, lang: Path, checkpoint: str, alpha: float) -> argparse.Namespace:
    """``train.finetune``'s arguments for one cell."""
    return argparse.Namespace(**{**vars(args), "model": str(mm), "lang": str(lang), "alpha": f"{alpha:g}",
                                 "alpha_gradient": None, "module_alpha": [], "name": cell_name(checkpoint, alpha),
                                 "out": str(Path(args.out) / "results")})  # fmt: skip


def cell_results(data, folder: Path) -> dict:
    """A cell's finished tasks as lm-eval ``results`` (``metric,none`` keys); accuracy with its
    stderr where ``data`` has the task's validation file."""
    results = {}
    for task_dir in sorted(p for p in folder.glob("*") if (p / "predictions.json").is_file()):
        scores = finetune.read_scores(task_dir)
        results[task_dir.name] = {f"{metric},none": value for metric, value in scores.items()}
        valid = task_file(data, task_dir.name, "valid")
        if "accuracy" in scores and valid.is_file():
            (predictions,) = json.loads((task_dir / "predictions.json").read_text()).values()
            _, labels = read_examples(valid, task_dir.name)
            correct = [float(p["pred"] == y) for p, y in zip(predictions["predictions"], labels)]
            if len(correct) > 1:
                results[task_dir.name]["accuracy_stderr,none"] = mean_stderr(correct)
    return results


def report(out: Path, data) -> list[dict]:
    """results.csv, results.jsonl and the plots from every cell of ``cells.jsonl`` and its finished tasks."""
    cells = read_cells(out)
    for cell in cells:
        cell["results"] = cell_results(data, out / "results" / cell_name(cell["checkpoint"], cell["alpha"]) / "main" / "finetune")  # fmt: skip
    write_reports(out, cells, sorted({task for c in cells for task in c["results"]}))
    return cells


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        alphas = parse_alphas(args.alphas)
        tasks = finetune.task_list(args)
        pairs = checkpoint_pairs(args.mm, args.lang, args.checkpoints)
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise BabyMergeError(f"--out {out} is a file, not a sweep folder; choose another --out")
        bar = tqdm(total=len(pairs) * len(alphas), desc="GLUE cells", unit="cell", disable=not finetune.is_main())
        for checkpoint, mm, lang in pairs:
            for alpha in alphas:
                finetune.run(cell_args(args, mm, lang, checkpoint, alpha), tasks)
                if finetune.is_main():
                    if (checkpoint, alpha) not in {(c["checkpoint"], c["alpha"]) for c in read_cells(out)}:
                        append_cell(out, {"checkpoint": checkpoint, "words_seen": words_seen(mm),
                                          "alpha": alpha, "mm": str(mm), "lang": str(lang), "results": {}})  # fmt: skip
                    report(out, args.data)
                bar.update()
        bar.close()
    except BabyMergeError as err:
        if finetune.is_main():
            print(f"error: {err}", file=sys.stderr)
        finetune.distributed.exit_on_error(2)
        return 2
    if finetune.is_main():
        print(f"wrote {out / 'results.csv'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
