"""The end-to-end demo: ``make demo`` (or ``python -m demo --out demo_out`` from the repository root).

Runs on a fresh machine in a few minutes on 2 CPU cores, with no network, using the real
commands a researcher would type:

1. write small corpora (toy-grammar sentences; captioned pictures of coloured shapes), train a
   BPE tokenizer on both (``python -m train.tokenizer``), build a tiny random DINOv2 and
   encode the pictures with it (``python -m train.encode_images``);
2. train a tiny multimodal BabyLLaVA and its language-only twin (text only, black image
   first) with the DeepSpeed launcher, two CPU ranks, ZeRO-2
   (``deepspeed --num_gpus 2 --module train --config ...``), a checkpoint per epoch;
3. ``babymerge merge --alpha 0.3`` writes a merged checkpoint;
4. ``lm_eval --model babymerge ...,alpha=0.3`` merges at load time and evaluates BLiMP
   (the files in ../shared/data/blimp when present, else a few minimal pairs written here)
   and the synthetic Winoground-format set, with ``--log_samples``;
5. ``babymerge sweep`` over every checkpoint and alphas 0, 0.3, 0.7, 1, with its plots;
6. ``babymerge submit`` turns the samples into a (partial) leaderboard prediction file.
It prints where each artefact is.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from babymerge import tasks_path
from babymerge.data.synthetic_winoground import write_dataset
from demo.data import FEATURE_SIZE, tiny_config, write_config
from demo.toy import build_toy_encoder

REPO = Path(__file__).resolve().parents[1]
SHARED_BLIMP = REPO.parent / "shared" / "data" / "blimp"
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
    print("   $", " ".join(cmd), flush=True)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="where to write everything (replaced)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    tasks_dir = tasks_path()  # lm_eval_tasks/ of the checkout (babymerge/lm_eval_tasks/ when installed from a wheel)
    py = sys.executable

    print("1/6 corpora, tokenizer, a tiny random DINOv2 and the image features (no downloads) ...", flush=True)
    run([py, "-m", "demo.data", "--out", str(out / "corpora"), "--sentences", "4000", "--captions", "1000"])
    run(
        [
            py,
            "-m",
            "train.tokenizer",
            "--data",
            str(out / "corpora"),
            "--vocab-size",
            "600",
            "--out",
            str(out / "tokenizer"),
        ]
    )
    build_toy_encoder(out / "encoder", feature_size=FEATURE_SIZE)
    run([py, "-m", "train.encode_images", "--captions", str(out / "corpora" / "multimodal" / "captions.jsonl"),
         "--encoder", str(out / "encoder"), "--out", str(out / "features")])  # fmt: skip

    print(
        "2/6 training the multimodal model and its language-only twin: deepspeed, 2 CPU ranks, ZeRO-2 ...", flush=True
    )
    for name, multimodal in (("mm", True), ("lang", False)):
        config = write_config(out / "configs" / f"{name}.yaml", tiny_config(out, name, multimodal=multimodal))
        run(["deepspeed", "--num_gpus", "2", "--module", "train", "--config", str(config)])
    mm_run, lang_run = out / "runs" / "mm", out / "runs" / "lang"
    mm_ckpt, lang_ckpt = mm_run / "ckpt-ep3", lang_run / "ckpt-ep3"

    print("3/6 merging the last checkpoints with `babymerge merge --alpha 0.3` ...", flush=True)
    merged = out / "merged-alpha0.3"
    run(
        [
            py,
            "-m",
            "babymerge",
            "merge",
            "--mm",
            str(mm_ckpt),
            "--lang",
            str(lang_ckpt),
            "--alpha",
            "0.3",
            "--out",
            str(merged),
        ]
    )

    print("4/6 evaluating with `lm_eval --model babymerge` (merge at load time) ...", flush=True)
    data = out / "evaluation_data"
    blimp_source = write_blimp(data)
    write_dataset(data / "winoground", n=24, seed=0)
    env = {**os.environ, "BABYMERGE_DATA": str(data)}
    tasks = [f"blimp_{uid}" for uid in BLIMP_PARADIGMS] + ["winoground"]
    results = out / "results"
    run(["lm_eval", "--model", "babymerge", "--model_args", f"pretrained={mm_ckpt},lang_ckpt={lang_ckpt},alpha=0.3",
         "--tasks", ",".join(tasks), "--include_path", tasks_dir, "--device", "cpu", "--batch_size", "auto",
         "--output_path", str(results), "--log_samples"], env)  # fmt: skip

    print("5/6 sweeping alpha over every checkpoint with `babymerge sweep` ...", flush=True)
    sweep_dir = out / "sweep"
    run([py, "-m", "babymerge", "sweep", "--mm", str(mm_run), "--lang", str(lang_run), "--checkpoints", "all",
         "--alphas", "0,0.3,0.7,1", "--tasks", ",".join(tasks), "--include-path", tasks_dir, "--out", str(sweep_dir),
         "--no-progress"], env)  # fmt: skip

    print("6/6 writing a leaderboard prediction file with `babymerge submit` ...", flush=True)
    submission = out / "submission"
    submit_results = out / "results-submission"
    run(["lm_eval", "--model", "babymerge", "--model_args", f"pretrained={merged}",
         "--tasks", ",".join(f"blimp_filtered_{uid}" for uid in BLIMP_PARADIGMS), "--include_path", tasks_dir,
         "--device", "cpu", "--batch_size", "auto", "--output_path", str(submit_results), "--log_samples"], env)  # fmt: skip
    run([py, "-m", "babymerge", "submit", "--results", str(submit_results), "--model", merged.name,
         "--out", str(submission), "--data", str(data), "--allow-partial"])  # fmt: skip

    print("\nArtefacts:")
    print(
        f"  training configs, logs                  {out / 'configs'}  {mm_run / 'log.jsonl'}  {lang_run / 'log.jsonl'}"
    )
    print(f"  checkpoints (one per epoch)             {mm_run}/ckpt-ep{{1,2,3}}  {lang_run}/ckpt-ep{{1,2,3}}")
    print(f"  merged checkpoint (alpha=0.3)           {merged}")
    print(f"  evaluation data (BLiMP: {blimp_source}; synthetic Winoground) {data}")
    print(f"  lm_eval results and samples             {results}")
    print(
        f"  sweep results and plots                 {sweep_dir / 'results.csv'}  {sweep_dir / 'score_vs_alpha.png'}  {sweep_dir / 'tradeoff.png'}"
    )
    print(f"  submission                              {submission}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
