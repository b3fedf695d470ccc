"""The end-to-end demo: ``make demo`` (or ``python -m demo --out demo_out`` from the repository root).

Reproduces the paper's trade-off in miniature, on a synthetic world (``demo/world.py``), in a
few minutes on 2 CPU cores with no network, using the real commands a researcher would type:

1. the world from a seed: a small English grammar with agreement (text for both models and
   held-out minimal pairs in BLiMP's format), pictures of two coloured shapes with captions
   (a Winoground-format test set of held-out pictures); a BPE tokenizer
   (``train.tokenizer``), a fixed random DINOv2 and the pictures' features
   (``train.encode_images``);
2. the multimodal BabyLLaVA (grammar text + captions, black image before text) and its
   language-only twin (the same text + as many words of more text), same initial weights,
   same number of optimiser steps, with the DeepSpeed launcher, two CPU ranks, ZeRO-2
   (``deepspeed --num_gpus 2 --module train --config ...``), checkpoints by words seen
   (``chck_*M``) and per epoch;
3. ``babymerge merge --alpha 0.3`` writes a merged checkpoint;
4. ``lm_eval --model babymerge ...,alpha=0.3`` merges at load time and evaluates the world's
   minimal pairs, three official BLiMP paradigms (the files in ../shared/data/blimp when
   present, else a few minimal pairs written here) and the Winoground-format set;
5. ``babymerge sweep --checkpoints words`` over the word-count checkpoints and alphas
   0, 0.3, 0.5, 0.7, 1, with its plots (``score_vs_words.png``: words seen on the x-axis);
6. ``babymerge submit`` turns the samples into a (partial) leaderboard prediction file;
7. the BabyLM 2025 protocol in one command (``python -m train.protocol``) on a small synthetic
   ``evaluation_data/`` tree in the official pipeline's layout (``demo/babylm2025_data.py``: the
   zero-shot files, and from the world its filtered Winoground rows, GLUE-format tasks made of its
   minimal pairs, an AoA word list and DevBench manifests with its pictures): the fast suite across
   the word-count checkpoints, then at alphas 0, 0.3, 1 the full suite, GLUE fine-tuning (cheap:
   few epochs at a raised learning rate), AoA, DevBench, and ``babymerge submit --format 2025``;
   the submission lacks only what the demo's scale cannot make (the official checkpoint names,
   hence AoA), each named with the reason.
It prints the trade-off at the last word-count checkpoint (Winoground-format text score and
minimal-pair accuracy per alpha), GLUE accuracy by alpha, what the 2025 submission lacks and why,
and where each artefact is.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from babymerge import tasks_path
from babymerge.babylm.sizes import FULL_SIZES
from demo import grammar, world
from demo.babylm2025_data import write_cdi, write_devbench, write_evaluation_data, write_glue, write_winoground_filtered

REPO = Path(__file__).resolve().parents[1]
SHARED_BLIMP = REPO.parent / "shared" / "data" / "blimp"
ALPHAS = "0,0.3,0.5,0.7,1"
ALPHAS_2025 = "0,0.3,1"
# The world's GLUE-format tasks: rows per task, and the cheap fine-tuning the demo gives them (the
# pipeline's recipe is 10 epochs at lr 3e-5: far too slow for a tiny model on 2 cores).
GLUE_TRAIN, GLUE_VALID = 64, 32
FINETUNE = "--epochs 3 --learning-rate 1e-3 --batch-size 16"
AOA_WORDS = 8
MARKER = ".babymerge-demo"  # left in --out: the demo replaces only a folder that holds it
BLIMP_PARADIGMS = ["anaphor_number_agreement", "determiner_noun_agreement_1", "regular_plural_subject_verb_agreement_1"]
# Used when the official BLiMP files are not beside the checkout: minimal pairs of our own.
OWN_PAIRS = {
    "anaphor_number_agreement": [
        ("The girls saw themselves.", "The girls saw herself."),
        ("The boy helps himself.", "The boy helps themselves."),
    ],
    "determiner_noun_agreement_1": [
        ("The dog sees this ball.", "The dog sees these ball."),
        ("A girl finds those trees.", "A girl finds that trees."),
    ],
    "regular_plural_subject_verb_agreement_1": [
        ("The cats run.", "The cats runs."),
        ("The teacher draws.", "The teacher draw."),
    ],
}


def run(cmd: list[str], env: dict | None = None) -> None:
    """Print the command as a user types it; run ``lm_eval`` as this interpreter's module, so the
    demo works from a venv that is not on PATH."""
    print("   $", " ".join(cmd), flush=True)
    if cmd[0] == "lm_eval":
        cmd = [sys.executable, "-m", "lm_eval", *cmd[1:]]
    subprocess.run(cmd, check=True, env=env)


def write_blimp(data: Path) -> str:
    """BLiMP paradigm files in data/blimp (and blimp_filtered for the submission)."""
    for folder in ("blimp", "blimp_filtered"):
        (data / folder).mkdir(parents=True, exist_ok=True)
        for uid in BLIMP_PARADIGMS:
            target = data / folder / f"{uid}.jsonl"
            if SHARED_BLIMP.is_dir():
                lines = (SHARED_BLIMP / f"{uid}.jsonl").read_text().splitlines()[:50]
            else:
                lines = [json.dumps({"sentence_good": g, "sentence_bad": b, "UID": uid, "pairID": str(i), "field": "syntax",
                                     "linguistics_term": "agreement"}) for i, (g, b) in enumerate(OWN_PAIRS[uid])]  # fmt: skip
            target.write_text("\n".join(lines) + "\n")
    return (
        "the first 50 pairs of 3 official BLiMP paradigms"
        if SHARED_BLIMP.is_dir()
        else "a few minimal pairs written by the demo"
    )


def fresh_output_folder(out: Path) -> None:
    """Empty ``out`` for a new run, but only if it is missing, empty or an earlier demo's output
    (it holds ``MARKER``): ``--out ~`` must not delete a home directory."""
    if out.exists() and not (out / MARKER).is_file() and (not out.is_dir() or any(out.iterdir())):
        sys.exit(f"python -m demo: error: --out {out} exists and is not an earlier demo's output; give a new folder")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by python -m demo; replaced by its next run\n")


def write_world_2025(data: Path, world_dir: Path) -> dict:
    """The 2025 parts drawn from the world, beside the zero-shot files: the filtered Winoground rows of its
    Winoground-format set, its GLUE-format tasks (from its minimal pairs), an AoA word list (its nouns in
    contexts from its text) and DevBench manifests (its pictures). Returns the counts the submission checks."""
    pairs = [(r["sentence_good"], r["sentence_bad"]) for f in sorted((data / world.GROUP).glob("*.jsonl"))
             for r in map(json.loads, f.read_text().splitlines())]  # fmt: skip
    sentences = (world_dir / "corpora" / "text" / "corpus.train").read_text().splitlines()
    write_winoground_filtered(data)
    glue = write_glue(data, pairs, GLUE_TRAIN, GLUE_VALID)
    aoa_rows = write_cdi(data, sentences, sorted(grammar.NOUNS)[:AOA_WORDS])
    return {"glue": glue, "aoa": aoa_rows, "devbench": write_devbench(data)}


def submission_sizes(data: Path, counts: dict, path: Path) -> Path:
    """The demo's counts for ``--sizes`` (``babymerge submit --format 2025``): the synthetic tree has a few
    items per subtask, not the official counts (``FULL_SIZES``) the check enforces, so the counts are those
    of the data the demo wrote: each full zero-shot subtask's documents as lm-eval loads them (keyed in
    lower case, as collate_preds compares them), GLUE's validation rows and DevBench's array shapes."""
    from lm_eval.tasks import TaskManager

    from babymerge.babylm.tasks import TASKS
    from babymerge.data import DATA_ENV
    from babymerge.sweep import default_include_path

    saved, os.environ[DATA_ENV] = os.environ.get(DATA_ENV), str(data)
    try:
        manager = TaskManager(include_path=default_include_path(), include_defaults=False)
        full: dict = {}
        for task in manager.load(["babylm2025_full_zero_shot"])["tasks"].values():
            name = task.config.task
            pipeline, subtask = ("winoground", "winoground") if name == "winoground_filtered" else (
                TASKS[name].task, TASKS[name].subtask)  # fmt: skip
            full.setdefault(pipeline, {})[subtask.lower()] = len(list(task.eval_docs))
    finally:
        os.environ.pop(DATA_ENV) if saved is None else os.environ.__setitem__(DATA_ENV, saved)
    sizes = {"full": {**FULL_SIZES, **full, **counts["glue"]}, "aoa": counts["aoa"], "devbench": counts["devbench"]}
    path.write_text(json.dumps(sizes, indent=1) + "\n")
    return path


def missing_reasons(missing: str) -> list[tuple[str, str]]:
    """What the demo's submission lacks (``babymerge submit``'s list), grouped, each with why: the parts the
    demo's scale cannot make; anything else is named as not expected."""
    names = [m for m in missing.partition("missing: ")[2].split(", ") if m]
    fast = [m for m in names if m.startswith("fast/")]
    reasons = []
    if fast:
        reasons.append((f"fast_eval_results of {len(fast)} checkpoints ({fast[0]} ... {fast[-1]})",
                        "the official names are chck_1M ... chck_1000M (words seen, up to 1B); the world's runs "
                        "see 400,000 words, their checkpoints are chck_0.025M ... chck_0.4M"))  # fmt: skip
    if "aoa" in names:
        reasons.append(("aoa", "collate_preds takes AoA only with all 28 official checkpoints (computed all the "
                        "same: the protocol's aoa/ folder)"))  # fmt: skip
    reasons += [(m, "NOT expected at the demo's scale") for m in names if not m.startswith("fast/") and m != "aoa"]
    return reasons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default="demo_out",
        help="where to write everything: a new or empty folder, or an earlier demo's output (replaced)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    fresh_output_folder(out)
    tasks_dir = tasks_path()  # lm_eval_tasks/ of the checkout (babymerge/lm_eval_tasks/ when installed from a wheel)
    py = sys.executable
    scale = world.DEMO
    import torch

    if not torch.cuda.is_available():  # a CPU demo: say so, rather than have each DeepSpeed process warn of no GPU
        os.environ.setdefault("DS_ACCELERATOR", "cpu")

    print("1/7 the synthetic world (grammar, pictures, held-out test sets), tokenizer, a fixed random DINOv2 "
          "and the image features (no downloads) ...", flush=True)  # fmt: skip
    summary = world.prepare(out, scale)
    print(f"   {json.dumps(summary)}", flush=True)
    data = out / "world" / "evaluation_data"
    blimp_source = write_blimp(data)
    include = os.pathsep.join([tasks_dir, str(out / "world" / "tasks")])
    # lm-eval's INFO log (task paths, seeds, where samples went) stays out of the demo; LMEVAL_LOG_LEVEL=INFO shows it
    env = {"LMEVAL_LOG_LEVEL": "WARNING", **os.environ, "BABYMERGE_DATA": str(data)}

    print("2/7 training the multimodal model and its language-only twin (same init, same number of steps): "
          "deepspeed, 2 CPU ranks, ZeRO-2 ...", flush=True)  # fmt: skip
    mm_run, lang_run = world.train_twins(out, scale)
    mm_ckpt, lang_ckpt = (run / (run / "latest").read_text().strip() for run in (mm_run, lang_run))

    print("3/7 merging the last checkpoints with `babymerge merge --alpha 0.3` ...", flush=True)
    merged = out / "merged-alpha0.3"
    run([py, "-m", "babymerge", "merge", "--mm", str(mm_ckpt), "--lang", str(lang_ckpt), "--alpha", "0.3",
         "--out", str(merged)])  # fmt: skip

    print("4/7 evaluating with `lm_eval --model babymerge` (merge at load time) ...", flush=True)
    tasks = [world.GROUP] + [f"blimp_{uid}" for uid in BLIMP_PARADIGMS] + ["winoground"]
    results = out / "results"
    # lm_eval takes one --include_path: the project's tasks, then the world's (`babymerge sweep` takes both at once)
    for names, folder in ((tasks[1:], tasks_dir), ([world.GROUP], str(out / "world" / "tasks"))):
        run(["lm_eval", "--model", "babymerge", "--model_args", f"pretrained={mm_ckpt},lang_ckpt={lang_ckpt},alpha=0.3",
             "--tasks", ",".join(names), "--include_path", folder, "--device", "cpu", "--batch_size", "auto",
             "--output_path", str(results), "--log_samples"], env)  # fmt: skip

    print("5/7 sweeping alpha over the word-count checkpoints with `babymerge sweep` ...", flush=True)
    sweep_dir = out / "sweep"
    run([py, "-m", "babymerge", "sweep", "--mm", str(mm_run), "--lang", str(lang_run), "--checkpoints", "words",
         "--alphas", ALPHAS, "--tasks", ",".join(tasks), "--include-path", include, "--out", str(sweep_dir),
         "--no-progress"], env)  # fmt: skip
    numbers = world.trade_off(sweep_dir)
    figure = world.plot_trade_off(numbers, out / "tradeoff_world.png")
    across = world.plot_across_training(sweep_dir, out / "tradeoff_words.png")

    print("6/7 writing a leaderboard prediction file with `babymerge submit` ...", flush=True)
    submission = out / "submission"
    submit_results = out / "results-submission"
    run(["lm_eval", "--model", "babymerge", "--model_args", f"pretrained={merged}",
         "--tasks", ",".join(f"blimp_filtered_{uid}" for uid in BLIMP_PARADIGMS), "--include_path", tasks_dir,
         "--device", "cpu", "--batch_size", "auto", "--output_path", str(submit_results), "--log_samples"], env)  # fmt: skip
    run([py, "-m", "babymerge", "submit", "--results", str(submit_results), "--model", merged.name,
         "--out", str(submission), "--data", str(data), "--allow-partial"])  # fmt: skip

    print("7/7 the BabyLM 2025 protocol in one command, `python -m train.protocol`: the fast suite across the "
          "word-count checkpoints, then at each alpha the full suite, GLUE fine-tuning (the world's GLUE-format "
          f"tasks, cheap: {FINETUNE}), AoA, DevBench on the final merge, `babymerge submit --format 2025` ...",
          flush=True)  # fmt: skip
    write_evaluation_data(data, blimp=SHARED_BLIMP if SHARED_BLIMP.is_dir() else None)
    counts = write_world_2025(data, out / "world")
    protocol_dir = out / "protocol"
    sizes = submission_sizes(data, counts, out / "sizes-babylm2025.json")
    run([py, "-m", "train.protocol", "--mm", str(mm_run), "--lang", str(lang_run), "--alphas", ALPHAS_2025,
         "--data", str(data), "--out", str(protocol_dir), "--sizes", str(sizes), f"--finetune-args={FINETUNE}"], env)  # fmt: skip
    summary_rows = list(csv.DictReader((protocol_dir / "summary.csv").open()))
    alphas_2025 = [float(a) for a in ALPHAS_2025.split(",")]
    glue = {}
    for row in summary_rows:
        if row["part"].startswith("glue ") and row["part"].endswith(" accuracy"):
            glue.setdefault(row["part"].split()[1], {})[float(row["alpha"])] = float(row["value"])
    missing = (protocol_dir / f"a{alphas_2025[1]}" / "submission_missing.txt").read_text().strip()

    print(f"\nThe trade-off at {numbers['checkpoint']} ({numbers['words_seen']:,} words seen), by alpha "
          "(weight of the language-only model):")  # fmt: skip
    print("  alpha                                   " + "  ".join(f"{a:5g}" for a in numbers["alphas"]))
    print("  Winoground-format text score            " + "  ".join(f"{v:5.2f}" for v in numbers["text_score"]))
    print("  minimal pairs of the world (accuracy)   " + "  ".join(f"{v:5.2f}" for v in numbers["minimal_pairs"]))
    print(f"\nGLUE-format tasks of the world (label: is the second sentence the grammatical one?), fine-tuned "
          f"{GLUE_TRAIN} rows, validation accuracy on {GLUE_VALID}, {FINETUNE}:")  # fmt: skip
    print("  alpha                                   " + "  ".join(f"{a:5g}" for a in alphas_2025))
    for task, by_alpha in glue.items():
        print(f"  {task:<40}" + "  ".join(f"{by_alpha.get(a, float('nan')):5.2f}" for a in alphas_2025))
    print(f"\nThe BabyLM 2025 submission at alpha={alphas_2025[1]:g} lacks only what the demo's scale cannot make:")
    for what, why in missing_reasons(missing):
        print(f"  {what}: {why}")
    print("\nArtefacts:")
    print(f"  the world (corpora, evaluation data)    {out / 'world'}")
    print(
        f"  training configs, logs                  {out / 'configs'}  {mm_run / 'log.jsonl'}  {lang_run / 'log.jsonl'}"
    )
    print(f"  checkpoints (words seen, epochs)        {mm_run}/chck_*M  {lang_run}/chck_*M")
    print(f"  merged checkpoint (alpha=0.3)           {merged}")
    print(f"  evaluation data (BLiMP: {blimp_source}; the world's minimal pairs and Winoground-format set) {data}")
    print(f"  lm_eval results and samples             {results}")
    print(f"  sweep results and plots                 {sweep_dir / 'results.csv'}  {sweep_dir / 'score_vs_words.png'}  "
          f"{sweep_dir / 'score_vs_alpha.png'}  {sweep_dir / 'tradeoff.png'}")  # fmt: skip
    print(f"  the trade-off: last checkpoint, words   {figure}  {across}")
    print(f"  submission                              {submission}")
    print(
        f"  BabyLM 2025 protocol: summary, log, plots  {protocol_dir / 'summary.csv'}  {protocol_dir / 'protocol.log'}  "
        f"{protocol_dir / 'sweep' / 'score_vs_words.png'}"
    )
    print(f"  BabyLM 2025 submissions (one per alpha)  {protocol_dir}/a*/submission  (evaluation data: {data})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
