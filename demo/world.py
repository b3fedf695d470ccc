"""The demo's synthetic world: a small grammar and a world of coloured shapes, from one seed.

    python -m demo.world --out demo_out/world

Everything the demo trains on and is evaluated on comes from here, deterministically:

* **Pictures** of two coloured shapes, one left of / above the other, with captions
  ("a red square above a blue circle"), drawn by ``babymerge.data.synthetic_winoground``
  (training pictures with a little jitter, so the model cannot learn a few hundred pictures
  by heart). The Winoground-format test set is made of *held-out pictures*: no training
  caption shows a picture of a test item (a picture counts as seen whichever of its two
  descriptions, "a red square above a blue circle" or "a blue circle below a red square",
  the caption uses), so the multimodal model can only score well by binding colours and
  shapes to positions. A model that ignores the image scores 0: the swapped captions have
  the same words, so both images give them the same scores, and a tie counts as wrong.
* **Text** from a small English grammar with agreement (``demo.grammar``): subject-verb
  number agreement (also across an attractor: "the girl near the dogs runs"), reflexive
  anaphors that agree with their subject in number (and gender: "the girls see themselves",
  "the boy sees himself") and determiners that agree with their noun ("this dog", "these
  dogs"). The vocabulary shares the pictures' colours, shapes and prepositions.
* **Minimal pairs** in BLiMP's file layout (``demo.grammar``: ``sentence_good``,
  ``sentence_bad``, ``UID``, ``pairID``, ``field``, ``linguistics_term``, ...; one file per
  paradigm, ``PARADIGMS``), built from sentences that are *not* in the training text.

Equal compute, as the paper compares its models: the multimodal run reads ``text/`` plus the
captions, the language-only twin reads ``text/`` plus ``text_extra/``, more sentences of the
same grammar with about as many words as the captions; both runs are stopped after the same
number of optimiser steps (``max_steps``). So the multimodal model spends part of its budget
on captions (which are grammatical, just not about agreement) and sees fewer agreement
sentences: that is the trade-off the demo shows.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from babymerge.data.synthetic_winoground import COLOURS, RELATIONS, SHAPES, caption, draw_scene, make_items
from babymerge.data.synthetic_winoground import write_dataset as write_winoground
from babymerge.publish import atomic_output_dir
from demo.grammar import (
    GROUP,
    PARADIGMS,
    grammar_sentence,
    minimal_pairs,
    write_world_tasks,
)

# -- pictures ------------------------------------------------------------------------------------
CONVERSE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}


# How the world's pictures are drawn: shapes that fill a third of the canvas, on ImageNet's mean
# colour (about 0 after the DINOv2 processor's normalisation), so the fixed encoder's pooled
# feature is made of the shapes rather than of the empty canvas.
DRAW = {"background": (124, 116, 104), "radius": 3 / 16}


def picture(scene) -> tuple:
    """What a scene's picture shows: each (colour, shape) with its place. "a red square above a
    blue circle" and "a blue circle below a red square" are the same picture."""
    first, relation, second = scene
    dx, dy = RELATIONS[relation]
    return tuple(sorted([(first, (dx, dy)), (second, (-dx, -dy))]))


def all_scenes() -> list[tuple]:
    """Every description of two differently coloured shapes in a relation."""
    colours = sorted(COLOURS)
    return [((c1, s1), r, (c2, s2)) for c1 in colours for c2 in colours if c1 != c2
            for s1 in SHAPES for s2 in SHAPES for r in sorted(RELATIONS)]  # fmt: skip


# -- writing it all --------------------------------------------------------------------------------
def write_world(
    out: str | Path,
    *,
    n_text: int = 3000,
    n_captions: int = 3000,
    n_pictures: int = 1000,
    n_pairs: int = 100,
    n_winoground: int = 30,
    seed: int = 0,
) -> dict:
    """Write the world under ``out`` and return a summary (counts, words):

    ``corpora/text/corpus.train`` (both runs), ``corpora/text_extra/corpus.train`` (the
    language-only twin's share instead of the captions), ``corpora/multimodal/captions.jsonl``
    + ``images/``, ``evaluation_data/world_blimp/<UID>.jsonl``, ``evaluation_data/winoground/``
    and ``tasks/`` (the lm-eval tasks for the minimal pairs)."""
    out = Path(out)
    rng = random.Random(seed)
    wino_items = make_items(n_winoground, seed=seed)
    held_out = {picture(s) for item in wino_items for s in item["scenes"]}
    scenes = [s for s in all_scenes() if picture(s) not in held_out]

    with atomic_output_dir(out / "corpora", overwrite=True) as tmp:
        (tmp / "multimodal" / "images").mkdir(parents=True)
        caption_words = 0
        pool = []  # the training pictures: scenes drawn with jitter, each caption shows one of them
        for k in range(n_pictures):
            scene = scenes[k % len(scenes)] if k < len(scenes) else rng.choice(scenes)
            name = f"images/{k:05d}.png"
            draw_scene(*scene, jitter=rng, **DRAW).save(tmp / "multimodal" / name)
            pool.append((scene, name))
        with open(tmp / "multimodal" / "captions.jsonl", "w") as f:
            for i in range(n_captions):
                scene, name = rng.choice(pool)
                if rng.random() < 0.5:  # either description of the picture
                    first, relation, second = scene
                    scene = (second, CONVERSE[relation], first)
                text = caption(*scene)
                caption_words += len(text.split())
                f.write(json.dumps({"id": i, "image": name, "caption": text}) + "\n")
        text = [grammar_sentence(rng) for _ in range(n_text)]
        extra, extra_words = [], 0
        while extra_words < caption_words:  # the twin's text in place of the captions: as many words
            extra.append(grammar_sentence(rng))
            extra_words += len(extra[-1].split())
        for folder, lines in (("text", text), ("text_extra", extra)):
            (tmp / folder).mkdir()
            (tmp / folder / "corpus.train").write_text("\n".join(lines) + "\n")

    seen = set(text) | set(extra)
    with atomic_output_dir(out / "evaluation_data" / GROUP, overwrite=True) as tmp:
        for uid in PARADIGMS:
            rows = minimal_pairs(uid, n_pairs, random.Random(f"{seed}-{uid}"), seen)
            (tmp / f"{uid}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_winoground(out / "evaluation_data" / "winoground", n=n_winoground, seed=seed, **DRAW)
    write_world_tasks(out / "tasks")
    summary = {"text_sentences": len(text), "text_words": sum(len(s.split()) for s in text),
               "extra_sentences": len(extra), "extra_words": extra_words, "captions": n_captions,
               "caption_words": caption_words, "training_scenes": len({picture(s) for s in scenes}), "training_pictures": n_pictures,
               "held_out_pictures": len(held_out), "pairs_per_paradigm": n_pairs, "winoground_items": n_winoground}  # fmt: skip
    (out / "world.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# -- training the two models on it -------------------------------------------------------------
DEMO_FINAL_WORDS = 400_000  # the last word-count checkpoint both runs reach: where the demo reads the trade-off


@dataclass
class Scale:
    """How big a world and how long a training (``DEMO``; the test changes only the evaluation
    sizes and the checkpoints). The multimodal run reads ``n_text`` grammar sentences and
    ``n_captions`` captions (three quarters of its words), each caption showing one of
    ``n_pictures`` jittered pictures; the twin reads the same sentences and as many more words
    of text as the captions have."""

    n_text: int = 1500
    n_captions: int = 6000
    n_pictures: int = 1500
    n_pairs: int = 100
    n_winoground: int = 30
    epochs: int = 8
    lr: float = 3e-3
    vocab_size: int = 500
    # Word-count checkpoints (babymerge.babylm.checkpoints): log-spaced word counts for the log x-axis
    # of score_vs_words.png, up to what both runs reach (the multimodal run: ~440,000 words).
    word_checkpoints: str | list = field(default_factory=lambda: [25_000, 50_000, 100_000, 200_000, DEMO_FINAL_WORDS])
    word_checkpoint_unit: int = 1_000_000
    seed: int = 0


DEMO = Scale()
# The fixed vision encoder: a random 1-layer DINOv2, 64 wide, at 42 x 42 pixels (3 x 3 patches
# of 14), pooled as the paper's authors pool (``babymerge.image_features`` defaults: the
# second-to-last layer, mean over the patch tokens). The image size matters: at 56 pixels
# (4 x 4 patches) a shape on the left and its mirror on the right cover the same pixels of
# their patches, so the mean over patches cannot tell "red left, blue right" from "blue
# left, red right"; at 42 they do not, and a linear probe reads the colour at each place
# from the feature (tests/test_demo_world.py checks both).
ENCODER = {"image_size": 42, "feature_size": 64}


def prepare(root: str | Path, scale: Scale = DEMO) -> dict:
    """The world, its tokenizer, the fixed encoder and the caption images' features under ``root``."""
    from demo.toy import build_toy_encoder
    from train import tokenizer as tokenizer_cli
    from train.encode_images import encode

    root = Path(root)
    summary = write_world(root / "world", n_text=scale.n_text, n_captions=scale.n_captions,
                          n_pictures=scale.n_pictures, n_pairs=scale.n_pairs, n_winoground=scale.n_winoground,
                          seed=scale.seed)  # fmt: skip
    corpora = root / "world" / "corpora"
    if tokenizer_cli.main(["--data", str(corpora), "--vocab-size", str(scale.vocab_size),
                           "--out", str(root / "tokenizer"), "--overwrite"]):  # fmt: skip
        raise RuntimeError(f"tokenizer training failed for {corpora}")
    build_toy_encoder(root / "encoder", **ENCODER)
    encode(corpora / "multimodal" / "captions.jsonl", str(root / "encoder"), root / "features")
    return summary


def twin_configs(root: str | Path, scale: Scale = DEMO) -> dict[str, dict]:
    """Training configs of the multimodal model (``mm``: text + captions) and its language-only
    twin (``lang``: text + as many words of more text, black image first). Same seed, so the
    same initial weights (the interpolation between them is then a path between two points
    that started together); the twin gets one epoch more and both stop at ``max_steps``
    (the caller sets it to the multimodal run's step count), so both take as many steps."""
    from demo.data import tiny_config

    root, corpora = Path(root), Path(root) / "world" / "corpora"
    configs = {}
    for name in ("mm", "lang"):
        config = tiny_config(root, name, multimodal=name == "mm", seed=scale.seed,
                             epochs=scale.epochs + (name == "lang"), word_checkpoints=scale.word_checkpoints,
                             word_checkpoint_unit=scale.word_checkpoint_unit,
                             model={"feature_size": ENCODER["feature_size"]},
                             optim={"lr": scale.lr, "warmup_steps": 10})  # fmt: skip
        config["data"]["text"] = [str(corpora / "text")] + ([str(corpora / "text_extra")] if name == "lang" else [])
        if name == "mm":
            config["data"]["multimodal"][0]["captions"] = str(corpora / "multimodal" / "captions.jsonl")
        configs[name] = config
    return configs


def train_twins(root: str | Path, scale: Scale = DEMO) -> tuple[Path, Path]:
    """Both runs with the real launcher (``deepspeed --num_gpus 2 --module train``), the
    multimodal one first; the twin stops at the same optimiser step."""
    import subprocess

    from demo.data import write_config
    from train.checkpointing import read_trainer_state

    root = Path(root)
    # `deepspeed` is this interpreter's launcher module, so the venv need not be on PATH
    # `--log_level warning`: the launcher's own INFO lines (world info, spawned commands) stay out of the demo
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--log_level", "warning",
                "--module", "train"]  # fmt: skip
    configs = twin_configs(root, scale)
    runs = {}
    for name in ("mm", "lang"):
        path = write_config(root / "configs" / f"{name}.yaml", configs[name])
        print("   $", " ".join([*launcher, "--config", str(path)]), flush=True)
        subprocess.run([*launcher, "--config", str(path)], check=True)
        runs[name] = Path(configs[name]["output_dir"])
        if name == "mm":  # the twin takes as many optimiser steps
            last = runs[name] / (runs[name] / "latest").read_text().strip()
            configs["lang"]["max_steps"] = read_trainer_state(last)["global_step"]
    return runs["mm"], runs["lang"]


# -- the numbers the demo prints and the test asserts -------------------------------------------
VISION = ("winoground", "text_score")
LANGUAGE = (GROUP, "acc")


def trade_off(sweep_dir: str | Path, checkpoint: str | None = None) -> dict:
    """From a sweep's ``results.csv``: at ``checkpoint`` (default: the one with the most words
    seen), the Winoground text score and the world's minimal-pair accuracy per alpha, with
    their standard errors: ``{"checkpoint", "words_seen", "alphas", "text_score",
    "text_score_stderr", "minimal_pairs", "minimal_pairs_stderr"}`` (lists in alpha order)."""
    import csv

    rows = list(csv.DictReader(open(Path(sweep_dir) / "results.csv")))
    if checkpoint is None:
        checkpoint = max(rows, key=lambda r: int(r["words_seen"] or 0))["checkpoint"]
    rows = [r for r in rows if r["checkpoint"] == checkpoint]
    out = {"checkpoint": checkpoint, "words_seen": int(rows[0]["words_seen"] or 0)}
    out["alphas"] = sorted({float(r["alpha"]) for r in rows})
    for key, (task, metric) in (("text_score", VISION), ("minimal_pairs", LANGUAGE)):
        by_alpha = {float(r["alpha"]): r for r in rows if (r["task"], r["metric"]) == (task, metric)}
        out[key] = [float(by_alpha[a]["value"]) for a in out["alphas"]]
        out[f"{key}_stderr"] = [float(by_alpha[a]["stderr"] or 0) for a in out["alphas"]]
    return out


def plot_across_training(sweep_dir: str | Path, path: str | Path) -> Path:
    """The two scores against words seen (log axis), one line per alpha: the effect across training."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in csv.DictReader(open(Path(sweep_dir) / "results.csv")) if r["words_seen"]]
    alphas = sorted({float(r["alpha"]) for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.3), sharey=True)
    for ax, (task, metric), title in zip(axes, (LANGUAGE, VISION),
                                         ("minimal pairs of the world (accuracy)", "Winoground-format text score")):  # fmt: skip
        for alpha, colour in zip(alphas, plt.cm.viridis([i / max(1, len(alphas) - 1) for i in range(len(alphas))])):
            pts = sorted((int(r["words_seen"]), float(r["value"])) for r in rows
                         if (r["task"], r["metric"], float(r["alpha"])) == (task, metric, alpha))  # fmt: skip
            if pts:
                ax.plot(*zip(*pts), marker="o", color=colour, label=f"alpha={alpha:g}")
        ax.set_xscale("log")
        words = sorted({int(r["words_seen"]) for r in rows})
        ax.set_xticks(words, [f"{w / 1000:g}K" for w in words])
        ax.minorticks_off()
        ax.set_xlabel("words seen")
        ax.set_title(title, fontsize="medium")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize="x-small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_trade_off(numbers: dict, path: str | Path) -> Path:
    """Both scores against alpha at one checkpoint: the figure of docs/demo.md."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for key, label in (("minimal_pairs", "minimal pairs of the world's grammar (accuracy)"),
                       ("text_score", "Winoground-format text score (held-out pictures)")):  # fmt: skip
        ax.errorbar(numbers["alphas"], numbers[key], yerr=numbers[f"{key}_stderr"], marker="o", capsize=2, label=label)
    ax.set_xlabel("alpha (weight of the language-only model)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{numbers['checkpoint']} ({numbers['words_seen']:,} words seen)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="center right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m demo.world", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo_out/world")
    p.add_argument("--text", type=int, default=DEMO.n_text, help="grammar sentences both runs read")
    p.add_argument("--captions", type=int, default=DEMO.n_captions)
    p.add_argument("--pictures", type=int, default=DEMO.n_pictures, help="distinct training pictures")
    p.add_argument("--pairs", type=int, default=DEMO.n_pairs, help="minimal pairs per paradigm")
    p.add_argument("--winoground", type=int, default=DEMO.n_winoground, help="Winoground-format items (held out)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    summary = write_world(a.out, n_text=a.text, n_captions=a.captions, n_pictures=a.pictures, n_pairs=a.pairs,
                          n_winoground=a.winoground, seed=a.seed)  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
