"""Small data files in the exact field layout of the real ones, made up here."""

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from demo.babylm2025_data import write_text_tasks
from demo.toy import _WORDS, synthetic_sentences

from conftest import BLIMP

# BLiMP paradigms given to the 2025 text tasks, per kind (the pipeline reads whichever files the folder has).
BLIMP_UIDS = {
    "full": ["adjunct_island", "principle_A_c_command", "wh_island"],
    "fast": ["adjunct_island", "complex_NP_island"],
}
NOUNS = sorted(_WORDS["noun"])
# The pipeline's GLUE templates (evaluation_pipeline/finetune/dataset.py): task -> (labels, a row's
# first and second text). Rows carry the fields its loader reads, as in glue_filtered/.
GLUE_TASKS = {
    "rte": (2, lambda r: (r["sentence1"], r["sentence2"])),
    "mnli": (3, lambda r: (r["premise"], r["hypothesis"])),
    "multirc": (2, lambda r: (f"Question: {r['question']} Answer: {r['answer']}", r["paragraph"])),
    "wsc": (2, lambda r: (f'Does "{r["span2_text"]}" refer to "{r["span1_text"]}" in this passage?', r["text"])),
}


def build_data(root: Path) -> Path:
    """The pipeline's evaluation_data/ layout: every subtask but most BLiMP paradigms, 2-3 made-up items each."""
    return write_text_tasks(root, blimp=BLIMP, blimp_uids=BLIMP_UIDS)


def glue_rows(task: str, n: int, seed: int) -> list[dict]:
    """``n`` rows of a GLUE task in glue_filtered/'s fields, made-up texts, labels cycling through the classes."""
    s = synthetic_sentences(3 * n, seed)
    labels = GLUE_TASKS[task][0]
    rows = []
    for i in range(n):
        # the second text ends in a word, not ".", so that the last token (the one classified) varies
        a, b, c = s[3 * i], s[3 * i + 1][:-1], s[3 * i + 2][:-1]
        row = {
            "rte": {"sentence1": a + " " + c, "sentence2": b},
            "mnli": {"premise": a + " " + c, "hypothesis": b, "genre": "fiction"},
            "multirc": {"paragraph": a + " " + b, "question": "Who " + c.split(" ", 2)[2] + "?", "answer": b.split()[1]},
            "wsc": {"text": a + " It " + c.split(" ", 2)[2], "span1_text": " ".join(a.split()[:2]), "span2_text": "It",
                    "span1_index": 0, "span2_index": len(a.split())},
        }[task]  # fmt: skip
        rows.append({**row, "label": (i * 7 + seed) % labels, "idx": i})
    return rows


def write_rule_task(root, n_train=96, n_valid=32):
    """rte files: label 1 iff the second text ends in a noun of the first half of NOUNS."""
    data = root / "evaluation_data"
    folder = data / "full_eval" / "glue_filtered"
    folder.mkdir(parents=True)
    for split, n, seed in (("train", n_train, 1), ("valid", n_valid, 2)):
        s = synthetic_sentences(2 * n, seed)
        rows = []
        for i in range(n):
            second = s[2 * i + 1][:-1]  # no final ".": the last token is the noun
            label = int(second.split()[-1] in NOUNS[: len(NOUNS) // 2])
            rows.append({"sentence1": s[2 * i], "sentence2": second, "label": label, "idx": i})
        (folder / f"rte.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def draw(path: Path, seed: str) -> None:
    """A small picture, different for every file name (shapes and colours from a seeded RNG)."""
    rng = random.Random(seed)
    image = Image.new("RGB", (rng.randint(30, 60), rng.randint(30, 60)), tuple(rng.randrange(256) for _ in range(3)))
    pen = ImageDraw.Draw(image)
    for _ in range(4):
        box = sorted(rng.sample(range(60), 2)), sorted(rng.sample(range(60), 2))
        pen.ellipse((box[0][0], box[1][0], box[0][1], box[1][1]), fill=tuple(rng.randrange(256) for _ in range(3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
