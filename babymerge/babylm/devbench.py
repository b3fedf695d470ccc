"""DevBench for BabyLLaVA, as the BabyLM 2025 pipeline runs it (``evaluation_pipeline/devbench/``).

    babymerge devbench --model runs/mm/ckpt [--lang runs/lang/ckpt --alpha 0.3] \\
        --data evaluation_data/full_eval/devbench --out results/NAME/main [--pipeline PIPELINE_DIR]

Three tasks, read from the folder the pipeline's ``devbench/download_data.sh`` writes
(``assets/<task>/manifest.csv`` with relative image paths, ``evals/<task>/`` the human data):

* **lex-viz_vocab** (visual vocabulary, 119 trials) and **gram-trog** (TROG, 76 trials): each
  trial one text and four images, the right one first. Each (image, text) pair is scored as
  the pipeline's BabyLM model class (``model_classes/babylm_models.py``) scores it: the
  **negative mean loss** of ``"The caption for this image is: {text}."`` after the image token
  (our processor's ``"<image> " + text``, ``prompt.image_prompt``), every token but the first a
  target, i.e. ``-model(**enc, labels=enc["input_ids"]).loss``. Output: ``[trials, 4, 1]``.
* **sem-things** (1854 THINGS images): each image's representation is the decoder's last
  hidden state averaged over the tokens of ``"<image> "`` with that image (the pipeline's
  ``get_all_image_feats`` with its dummy text ``" "``); output ``[1854, width]`` and the cosine
  similarity matrix ``[1854, 1854]`` that ``collate_preds`` puts in the submission.

An image becomes its feature as the checkpoint records (``model.encode_images``,
``image_features.py``), once per distinct file (the visual-vocabulary pictures are THINGS
pictures). Files are written as the pipeline lays them out, under ``--out`` (the pipeline's
``results/<model>/<revision>``): ``zero_shot/devbench/{lex-viz_vocab,gram-trog,sem-things,
sem-things_pairwise_sims}.npy``. ``babymerge submit --format 2025 --devbench OUT`` reads them.

The pipeline's accuracy counts a trial right when the first image scores strictly above the
three others: a tie is wrong, our own rule too (``scoring.is_right``), so there is one number.
Its comparison with children's data (KL divergence to the human choice distributions after a
fitted softmax temperature; RSA with the THINGS similarity judgements) needs its own code and
``nlopt``: ``--pipeline`` runs ``devbench/comparison/`` unmodified as a subprocess on the
written files (``comparison.py``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import BabyMergeError
from ..prompt import image_prompt
from ..publish import atomic_output_dir
from .scoring import is_right

CAPTION_PROMPT = "The caption for this image is: {text}."  # model_classes/babylm_models.py
THINGS_TEXT = " "  # the pipeline's dummy text for image representations
CHOICE_TASKS = ("lex-viz_vocab", "gram-trog")
TASKS = (*CHOICE_TASKS, "sem-things")
THINGS_BATCH = 16  # data_handling.make_dataloader: 16 single images per batch
SUBDIR = Path("zero_shot") / "devbench"  # under results/<model>/<revision>, as eval.py and collate_preds use it
DEFAULT_ALPHA = 0.3  # with --lang and no --alpha, as `babymerge merge` and the lm-eval adapter default
MARKER = "devbench_scores.json"  # our summary; marks a folder this program wrote
FETCH_HINT = (
    "fetch the data with the pipeline's own script, from the pipeline folder: "
    "`mkdir -p evaluation_data/full_eval && bash evaluation_pipeline/devbench/download_data.sh`, "
    "then give --data evaluation_data/full_eval/devbench"
)


@dataclass
class Trial:
    images: list[Path]
    texts: list[str]


def read_manifest(data: str | Path, task: str) -> list[Trial]:
    """``assets/<task>/manifest.csv`` as the pipeline reads it: columns ``image1..imageN`` and
    ``text1..textM`` (N, M: how many columns match ``image[0-9]``, ``text[0-9]``), image paths
    relative to the task folder."""
    folder = Path(data) / "assets" / task
    path = folder / "manifest.csv"
    if not path.is_file():
        raise BabyMergeError(f"DevBench {task}: {path} not found; {FETCH_HINT}")
    with path.open(newline="", encoding="utf-8-sig") as f:  # sem-things.csv starts with a byte-order mark
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []
    n_images = sum(bool(re.match("image[0-9]", c)) for c in columns)
    n_texts = sum(bool(re.match("text[0-9]", c)) for c in columns)
    if not rows or not n_images:
        raise BabyMergeError(f"DevBench {task}: {path} has no trials with image1.. columns; {FETCH_HINT}")
    return [
        Trial([folder / r[f"image{i}"] for i in range(1, n_images + 1)], [r[f"text{i}"] for i in range(1, n_texts + 1)])
        for r in rows
    ]


def check_data(data: str | Path, tasks=TASKS) -> dict[str, list[Trial]]:
    """Every task's trials, after checking that each image file is there (one line naming the first missing one)."""
    out = {}
    for task in tasks:
        trials = read_manifest(data, task)
        missing = [p for t in trials for p in t.images if not p.is_file()]
        if missing:
            raise BabyMergeError(f"DevBench {task}: {len(missing)} images missing, e.g. {missing[0]}; {FETCH_HINT}")
        out[task] = trials
    return out


def load_model(model: str | Path, lang=None, alpha=None, dtype: str = "float32", device: str = "cpu", progress=True):
    """(model, tokenizer): a BabyLLaVA checkpoint, merged with its language-only twin at load time
    when ``lang`` is given (``babymerge.merge``, linear, ``alpha`` = the language-only weight)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..checkpoint import parse_dtype
    from ..merge import merge
    from ..modeling import BabyLlavaForConditionalGeneration

    if lang is not None:
        alpha = DEFAULT_ALPHA if alpha is None else alpha
        net = merge(model, lang, "linear", alpha, dtype=dtype, progress=progress).model
    elif alpha not in (None, 0, 0.0):
        raise BabyMergeError(f"--alpha {alpha} needs --lang (the language-only checkpoint to merge with)")
    else:
        try:
            net = AutoModelForCausalLM.from_pretrained(model, dtype=parse_dtype(dtype))
        except OSError as err:
            raise BabyMergeError(f"--model {model}: not a checkpoint directory ({str(err).splitlines()[0]})") from err
    if not isinstance(net, BabyLlavaForConditionalGeneration):
        raise BabyMergeError(f"DevBench needs images: {model} is a text-only {type(net).__name__}, not BabyLLaVA")
    return net.to(device).eval(), AutoTokenizer.from_pretrained(model)


def check_model(model: str | Path) -> None:
    """Refuse, before anything is written, a folder that is not a BabyLLaVA checkpoint."""
    try:
        config = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise BabyMergeError(
            f"--model {model}: no readable config.json ({err}); give a BabyLLaVA checkpoint folder"
        ) from None
    if config.get("model_type") != "babyllava":
        kind = (config.get("architectures") or [config.get("model_type", "model")])[0]
        raise BabyMergeError(f"DevBench needs images: {model} is a text-only {kind}, not BabyLLaVA")


class DevBench:
    """Scores DevBench trials with one BabyLLaVA model; image features are encoded once per file."""

    def __init__(self, model, tokenizer, progress: bool = True):
        self.model, self.tokenizer, self.progress = model, tokenizer, progress
        self._features: dict[str, torch.Tensor] = {}

    def _ids(self, text: str) -> torch.Tensor:
        """``[1, T]`` ids of ``image_prompt(text)``, what the checkpoint's processor gives for ``text``."""
        return torch.tensor([self.tokenizer(image_prompt(text))["input_ids"]], device=self.model.device)

    def features(self, paths: list[Path]) -> torch.Tensor:
        """``[len(paths), feature_size]``: each file opened as the pipeline opens it (RGB), encoded
        and pooled as the checkpoint records, once per file."""
        from PIL import Image

        keys = [os.path.realpath(p) for p in paths]
        new = list(dict.fromkeys(k for k in keys if k not in self._features))
        for start in range(0, len(new), THINGS_BATCH):
            batch = new[start : start + THINGS_BATCH]
            images = []
            for key in batch:
                with Image.open(key) as img:
                    images.append(img.convert("RGB"))
            for key, feature in zip(batch, self.model.encode_images(images=images)):
                self._features[key] = feature
        return torch.stack([self._features[k] for k in keys])

    @torch.no_grad()
    def caption_scores(self, trials: list[Trial], desc: str = "captions") -> np.ndarray:
        """``[trials, images, texts]``: minus the mean loss of the caption prompt after each image."""
        out = []
        for trial in tqdm(trials, desc=desc, disable=not self.progress):
            feats = self.features(trial.images)
            sims = np.zeros((len(trial.images), len(trial.texts)))
            for j, text in enumerate(trial.texts):
                ids = self._ids(CAPTION_PROMPT.format(text=text)).expand(len(trial.images), -1)
                logits = self.model(input_ids=ids, image_features=feats).logits.float()
                logprobs = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
                sims[:, j] = logprobs.mean(dim=1).cpu().numpy()
            out.append(sims)
        return np.stack(out)

    @torch.no_grad()
    def image_representations(self, paths: list[Path], desc: str = "THINGS") -> np.ndarray:
        """``[images, width]``: the last hidden state averaged over the prompt's tokens, per image."""
        ids = self._ids(THINGS_TEXT)
        out = []
        for start in tqdm(range(0, len(paths), THINGS_BATCH), desc=desc, disable=not self.progress):
            feats = self.features(paths[start : start + THINGS_BATCH])
            hidden = self.model(input_ids=ids.expand(len(feats), -1), image_features=feats, output_hidden_states=True)
            out.append(hidden.hidden_states[-1].float().mean(dim=1).cpu().numpy())
        return np.concatenate(out)


def cosine_similarities(x: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarities of the rows (sklearn's ``cosine_similarity``, which the pipeline uses)."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(x.dtype).tiny)
    return unit @ unit.T


def accuracy(scores: np.ndarray) -> float:
    """Share of trials whose first image scores strictly above the others (the pipeline's and ours)."""
    return float(np.mean([is_right(trial[:, 0]) for trial in scores]))


def output_files(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """File name -> array, as the pipeline names them (``devbench/eval.py``, ``comparison/things.py``)."""
    files = {f"{task}.npy": scores[task] for task in CHOICE_TASKS if task in scores}
    if "sem-things" in scores:
        files["sem-things.npy"] = scores["sem-things"]
        files["sem-things_pairwise_sims.npy"] = cosine_similarities(scores["sem-things"])
    return files


def evaluate(bench: DevBench, trials: dict[str, list[Trial]]) -> dict[str, np.ndarray]:
    scores = {}
    for task in CHOICE_TASKS:
        if task in trials:
            scores[task] = bench.caption_scores(trials[task], desc=task)
    if "sem-things" in trials:
        scores["sem-things"] = bench.image_representations([t.images[0] for t in trials["sem-things"]])
    return scores


def run(
    model, data, out, *, lang=None, alpha=None, tasks=TASKS, pipeline=None, dtype="float32", device=None,
    overwrite=False, progress=True,
) -> dict:  # fmt: skip
    """Score, write ``out/zero_shot/devbench/*.npy`` (atomically, with ``devbench_scores.json``),
    run the pipeline's comparison when ``pipeline`` is given; returns the summary."""
    from . import comparison

    if lang is None and alpha not in (None, 0, 0.0):
        raise BabyMergeError(f"--alpha {alpha} needs --lang (the language-only checkpoint to merge with)")
    alpha = (DEFAULT_ALPHA if alpha is None else alpha) if lang is not None else 0.0
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise BabyMergeError(f"unknown DevBench task(s) {unknown}; choose from {', '.join(TASKS)}")
    check_model(model)
    trials = check_data(data, tasks)  # before the (long) load
    if pipeline is not None:
        comparison.check(pipeline, data, tasks)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    protect = [p for p in (model, lang, data) if p is not None]
    # entered first, so that an existing output is refused before the (long) scoring
    with atomic_output_dir(Path(out) / SUBDIR, overwrite, protect=protect, owner_marker=MARKER) as tmp:
        net, tokenizer = load_model(model, lang, alpha, dtype, device, progress)
        scores = evaluate(DevBench(net, tokenizer, progress), trials)
        summary = {
            "model": str(model), "lang": None if lang is None else str(lang), "alpha": alpha,
            "accuracy": {task: accuracy(scores[task]) for task in CHOICE_TASKS if task in scores},
            "trials": {task: len(t) for task, t in trials.items()},
        }  # fmt: skip
        for name, array in output_files(scores).items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            (tmp / name).write_bytes(buffer.getvalue())
        if pipeline is not None:
            summary["pipeline_comparison"] = comparison.compare(pipeline, data, tmp, tasks)
        (tmp / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def report(summary: dict) -> str:
    """The numbers, a few lines."""
    lines = [
        f"{task}: accuracy {acc:.4f} ({summary['trials'][task]} trials)" for task, acc in summary["accuracy"].items()
    ]
    comparison = summary.get("pipeline_comparison")
    if comparison:
        lines.append("the pipeline's comparison with human data (devbench/comparison/):")
        for task, result in comparison.items():
            lines.append(f"  {task}: {result['summary']}")
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "devbench", help="DevBench (visual vocabulary, TROG, THINGS) for BabyLLaVA, the 2025 pipeline's way"
    )
    p.add_argument("--model", required=True, help="BabyLLaVA checkpoint directory (the multimodal model)")
    p.add_argument("--lang", help="language-only twin: merge with it at load time (linear)")
    p.add_argument(
        "--alpha",
        type=float,
        help=f"weight of the LANGUAGE-ONLY model in the merge (default {DEFAULT_ALPHA} with --lang)",
    )
    p.add_argument(
        "--data",
        required=True,
        help="DevBench folder as download_data.sh writes it (evaluation_data/full_eval/devbench)",
    )
    p.add_argument("--out", required=True, help="results/<model>/<revision>: files go to OUT/zero_shot/devbench/")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, default all: {','.join(TASKS)}")
    p.add_argument(
        "--pipeline", metavar="DIR", help="checkout of the 2025 pipeline: run its comparison with human data"
    )
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier babymerge devbench output in OUT")
    p.add_argument("--no-progress", action="store_true")


def run_cli(args) -> int:
    summary = run(
        args.model, args.data, args.out, lang=args.lang, alpha=args.alpha,
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()], pipeline=args.pipeline, dtype=args.dtype,
        device=args.device, overwrite=args.overwrite, progress=not args.no_progress,
    )  # fmt: skip
    print(report(summary))
    print(f"wrote {Path(args.out) / SUBDIR}")
    return 0
