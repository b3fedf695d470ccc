"""A small synthetic BabyLM 2025 ``evaluation_data/`` tree, in the exact layout of the official pipeline's files.

    python -m demo.babylm2025_data --out evaluation_data      # then BABYMERGE_DATA=evaluation_data lm_eval ...

``write_evaluation_data(root)`` writes ``root/full_eval/`` and ``root/fast_eval/`` with every
zero-shot task of our 2025 suite that runs offline, a few made-up items per subtask, the
fields exactly as the pipeline's files have them (``evaluation_pipeline/sentence_zero_shot/
read_files.py`` reads them; ``babymerge.babylm.tasks`` names the folders):

* BLiMP (``blimp_filtered/``, ``blimp_fast/``: ``<UID>.jsonl`` with ``sentence_good``,
  ``sentence_bad``, ``field``, ``UID``, ...): lines of the official BLiMP files when a folder
  of them is given (``blimp=``, e.g. ``../shared/data/blimp``), else word-order scrambles of
  toy sentences; ``adjunct_island`` gets one exact tie (the same sentence twice);
* the supplement (``supplement_filtered/``, ``supplement_fast/``: the file name is the subtask);
* EWoK (``ewok_filtered/``, ``ewok_fast/``: ``Domain``, ``Context1/2``, ``Target1/2``, ...),
  ``agent-properties`` with one tie;
* entity tracking (``entity_tracking/{regular,ambiref,move_contents}.jsonl``,
  ``entity_tracking_fast/regular.jsonl``: ``input_prefix``, ``options``, ``numops``);
* wug_adj / wug_past (``wug_adj_nominalization/``, ``wug_past_tense/``: tab-separated
  ``sentences`` and a human ``ratio``), full and fast;
* COMPS (``full_eval/comps/comps_*.jsonl``: ``prefix_acceptable``, ``prefix_unacceptable``,
  ``property_phrase``, ``negative_sample``);
* reading (``{full,fast}_eval/reading/reading_data.csv``: a row per word, the pipeline's columns);
* VQA (``full_eval/vqa_filtered/vqa_filtered.jsonl``: ``question``, ``target_ans``, 7
  ``distractors``, ``idx_in_hf_dataset``) with its pictures: random-noise images in
  ``root/vqav2_validation/``, a ``datasets`` ``save_to_disk`` folder standing for the local
  VQAv2 validation copy our VQA task reads (the pipeline itself loads VQA images from the hub).

Winoground, AoA, GLUE and DevBench need a world to be drawn from (pictures, minimal pairs, words):
``write_world_parts`` writes them from the demo's world (``demo/world.py``): ``winoground_filtered/``
from a Winoground-format set, GLUE files from minimal pairs, ``full_eval/aoa/cdi_childes.json``
from a text corpus, and DevBench's manifests with the set's pictures.
The numbers the models get on these items mean nothing; they exist so that tests, the demo
and benchmarks can run the pipeline and our tasks on the same files. Deterministic from ``seed``.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd

from babymerge.babylm.tasks import BLIMP_UIDS, COMPS_FILES, ENTITY_TRACKING_SPLITS, EWOK_DOMAINS, SUPPLEMENT
from demo.toy import synthetic_sentences

# reading_data.csv's measures (evaluation_pipeline/reading/run.py's ``variables``)
READING_VARIABLES = [
    "RTfirstfix",
    "RTfirstpass",
    "RTgopast",
    "RTrightbound",
    "self_paced_reading_time",
    "ELAN",
    "LAN",
    "N400",
    "P600",
    "EPNP",
    "PNP",
]
VQA_WORDS = ["dog", "cat", "ball", "red", "blue", "two", "tree", "house", "car", "bird", "girl", "yes"]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def write_text_tasks(
    root: str | Path,
    seed: int = 0,
    *,
    blimp: Path | None = None,
    blimp_uids: dict[str, list[str]] | None = None,
    n: int = 2,
    ties: bool = True,
) -> Path:
    """The sentence_zero_shot tasks' files (BLiMP, supplement, EWoK, entity tracking, wug, COMPS) under ``root``.

    ``n`` sets the items per subtask: ``n`` per full BLiMP paradigm, supplement file and EWoK
    domain, ``n + 1`` per fast BLiMP paradigm, ``n`` per entity-tracking subset (numops), ``4n``
    wug_adj, ``3n`` wug_past and ``n + 1`` per COMPS file. ``blimp_uids``: the paradigms written,
    ``{"full": [...], "fast": [...]}`` (default: all 67 in both). ``ties``: add the two exact ties.
    """
    root = Path(root)
    uids = blimp_uids or {"full": list(BLIMP_UIDS), "fast": list(BLIMP_UIDS)}
    rng = random.Random(seed)
    pool = synthetic_sentences(4000, seed=seed + 1)
    sentence = lambda: rng.choice(pool)  # noqa: E731
    noun = lambda: rng.choice(["dog", "cat", "girl", "ball", "bird", "tree"])  # noqa: E731

    def pair(**fields):
        good = sentence()
        bad = " ".join(good.split()[::-1])  # a word-order scramble: same words, different sentence
        return {"sentence_good": good, "sentence_bad": bad, **fields}

    for kind, folder, count in (("full", "full_eval/blimp_filtered", n), ("fast", "fast_eval/blimp_fast", n + 1)):
        for uid in uids[kind]:
            if blimp is not None and Path(blimp).is_dir():  # real pairs, as the pipeline's blimp_filtered/ holds them
                lines = (Path(blimp) / f"{uid}.jsonl").read_text().splitlines()
                rows = [json.loads(line) for line in lines[3 : 3 + count]]
            else:
                rows = [
                    pair(
                        field="syntax", linguistics_term="island_effects", UID=uid, simple_LM_method=True, pairID=str(i)
                    )
                    for i in range(count)
                ]
            if ties and uid == "adjunct_island":  # a tie: the same sentence twice
                rows.append({**rows[0], "sentence_bad": rows[0]["sentence_good"], "pairID": "tie"})
            write_jsonl(root / folder / f"{uid}.jsonl", rows)
    for folder in ("full_eval/supplement_filtered", "fast_eval/supplement_fast"):
        for name in SUPPLEMENT:  # no field/UID: the file name is the subtask
            write_jsonl(root / folder / f"{name}.jsonl", [pair() for _ in range(n)])
    for folder in ("full_eval/ewok_filtered", "fast_eval/ewok_fast"):
        for domain in EWOK_DOMAINS:
            rows = []
            for i in range(n):
                a, b = noun(), noun()
                rows.append(
                    {
                        "Domain": domain,
                        "ContextType": "direct",
                        "ContextDiff": "x",
                        "TargetDiff": "y",
                        "Context1": f"The {a} is near the house.",
                        "Context2": f"The {b} is far from the house.",
                        "Target1": f"The {a} is near.",
                        "Target2": f"The {a} is far.",
                        "MetaTemplateID": i,
                    }
                )
            if ties and domain == "agent-properties":  # a tie: the same target twice
                rows.append({**rows[0], "Target2": rows[0]["Target1"]})
            write_jsonl(root / folder / f"{domain}.jsonl", rows)

    def entity_rows(numops_list):
        rows = []
        for numops in numops_list:
            for _ in range(n):
                a, b, c = noun(), noun(), noun()
                prefix = f"Box 0 contains the {a}, Box 1 contains the {b}. Move the {a} into Box 1. Box 1 contains "
                rows.append(
                    {
                        "input_prefix": prefix,
                        "options": [f"the {b} and the {a}.", f"the {c}.", "nothing."],
                        "numops": numops,
                        "sample_id": len(rows),
                    }
                )
        return rows

    for split in ENTITY_TRACKING_SPLITS:
        write_jsonl(root / "full_eval/entity_tracking" / f"{split}.jsonl", entity_rows(range(6)))
    write_jsonl(root / "fast_eval/entity_tracking_fast/regular.jsonl", entity_rows(range(6)))
    suffixes = ("ed", "s", "ded", "ing", "ered", "t")
    for kind in ("full_eval", "fast_eval"):
        adj = [
            {
                "sentences": f"The {noun()} saw its blick{'ity' if i % 2 else 'ness'}.\tThe dog saw its blickness.",
                "ratio": round(rng.random(), 3),
            }
            for i in range(4 * n)
        ]
        past = [
            {
                "sentences": f"Yesterday the {noun()} spling{suffixes[i % 6]}.\tThe girl splung.\tThe girl splang.",
                "ratio": round(rng.random(), 3),
            }
            for i in range(3 * n)
        ]
        write_jsonl(root / kind / "wug_adj_nominalization/wug_adj_nominalization.jsonl", adj)
        write_jsonl(root / kind / "wug_past_tense/wug_past_tense.jsonl", past)
    for stem in COMPS_FILES.values():
        rows = [
            {
                "prefix_acceptable": f"A {noun()}",
                "prefix_unacceptable": f"A {noun()}",
                "property_phrase": "can fly.",
                "negative_sample": noun(),
            }
            for _ in range(n + 1)
        ]
        write_jsonl(root / "full_eval/comps" / f"{stem}.jsonl", rows)
    return root


def write_reading_csv(path: str | Path, n_sentences: int = 8, seed: int = 0) -> pd.DataFrame:
    """A reading_data.csv in the pipeline's columns: a row per word, its left context in ``item``
    (empty for a first word: the pipeline reads it as "None"), the word with a leading space, the
    previous row's pair, reading measures (some missing) and covariates. The toy tokenizers split
    some words into several tokens."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    rows = []
    for sentence in synthetic_sentences(n_sentences, seed=seed):
        words = sentence.split()
        for k, word in enumerate(words):
            item = " ".join(words[:k]) or np.nan
            prev = rows[-1] if k else None
            row = {
                "item": item,
                "word": " " + word,
                "prev_item": prev["item"] if prev else np.nan,
                "prev_word": prev["word"] if prev else np.nan,
                "Subtlex_log10": rng.normal(3, 1),
                "length": len(word),
                "context_length": k,
                "prev_length": len(words[k - 1]) if k else np.nan,
            }
            for v in READING_VARIABLES:
                row[v] = rng.normal(300, 50) + 10 * len(word) if rng.random() > 0.1 else np.nan
            rows.append(row)
    frame = pd.DataFrame(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


def write_vqa(
    root: str | Path, seed: int = 0, n_images: int = 6, indices: tuple[int, ...] = (4, 0, 3, 5)
) -> list[dict]:
    """VQA rows (``full_eval/vqa_filtered/vqa_filtered.jsonl``) and a VQAv2-like image set they point into
    (``vqav2_validation/``, ``save_to_disk``; one greyscale picture, as VQAv2 has). Row i's image is
    ``indices[i]``; the third row's right answer also appears among its distractors: an exact tie."""
    import datasets
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    pictures = [Image.fromarray(rng.integers(0, 255, (30 + i, 40, 3), dtype=np.uint8)) for i in range(n_images)]
    pictures[3 % n_images] = pictures[3 % n_images].convert("L")  # the pipeline converts greyscale to RGB
    datasets.Dataset.from_dict({"image": pictures, "question_id": list(range(n_images))}).cast_column(
        "image", datasets.Image()
    ).save_to_disk(root / "vqav2_validation")
    rand = random.Random(seed + 1)
    rows = []
    for i, idx in enumerate(indices):
        answers = rand.sample(VQA_WORDS, 8)
        rows.append(
            {
                "question": f"What is near the {VQA_WORDS[i % len(VQA_WORDS)]}?",
                "target_ans": answers[0],
                "distractors": answers[1:],
                "idx_in_hf_dataset": idx,
                "question_id": 100 + i,
            }
        )
    if len(rows) > 2:
        rows[2]["distractors"][4] = rows[2]["target_ans"]  # the same string twice: an exact tie
    write_jsonl(root / "full_eval" / "vqa_filtered" / "vqa_filtered.jsonl", rows)
    return rows


def write_evaluation_data(
    root: str | Path,
    seed: int = 0,
    *,
    blimp: Path | None = None,
    blimp_uids: dict[str, list[str]] | None = None,
    n: int = 2,
    ties: bool = True,
    reading_sentences: int = 8,
    vqa: bool = True,
) -> Path:
    """Every offline zero-shot task's files under ``root`` (``full_eval/``, ``fast_eval/``, ``vqav2_validation/``).

    ``n``, ``blimp``, ``blimp_uids`` and ``ties``: see ``write_text_tasks``; ``reading_sentences``:
    sentences of the reading CSV (the same file in full_eval/ and fast_eval/, as in the pipeline's
    data; 0: none); ``vqa``: write the VQA rows and their images. Returns ``root``.
    """
    root = Path(root)
    write_text_tasks(root, seed, blimp=blimp, blimp_uids=blimp_uids, n=n, ties=ties)
    if reading_sentences:
        write_reading_csv(root / "full_eval" / "reading" / "reading_data.csv", reading_sentences, seed)
        write_reading_csv(root / "fast_eval" / "reading" / "reading_data.csv", reading_sentences, seed)
    if vqa:
        write_vqa(root, seed)
    return root


# -- the parts drawn from a world: Winoground (filtered), GLUE, AoA, DevBench ----------------------------------------
def write_winoground_filtered(root: str | Path) -> int:
    """``root/winoground_filtered/winoground.jsonl`` from the Winoground-format set in ``root/winoground/``: the
    pipeline's rows, one image and two captions, its own caption first (``image_idx``, ``image_key``). Returns rows."""
    root = Path(root)
    items = [json.loads(line) for line in (root / "winoground" / "winoground.jsonl").read_text().splitlines()]
    rows = []
    for idx, item in enumerate(items):
        for key, (good, bad) in (("image_0", ("caption_0", "caption_1")), ("image_1", ("caption_1", "caption_0"))):
            rows.append({"id": f"{item['id']}_{key}", "caption_0": item[good], "caption_1": item[bad], "tag": item["tag"],
                         "collapsed_tag": item["collapsed_tag"], "num_main_preds": item["num_main_preds"],
                         "secondary_tag": item.get("secondary_tag", ""), "image_idx": idx, "image_key": key})  # fmt: skip
    write_jsonl(root / "winoground_filtered" / "winoground.jsonl", rows)
    return len(rows)


def write_glue(root: str | Path, pairs: list[tuple[str, str]], n_train: int, n_valid: int, seed: int = 0) -> dict:
    """Every 2025 GLUE task's ``full_eval/glue_filtered/<task>.{train,valid}.jsonl`` in the task's fields, from
    minimal pairs (grammatical, ungrammatical): a row shows both sentences of a pair, the first text's fields
    one of them, the second text's fields the other; the label is 1 iff the second text is the grammatical
    one (an RTE-like judgement the model can learn). Returns {task: validation rows}."""
    from babymerge.babylm.tasks import GLUE_2025
    from train.glue import TASKS as GLUE_TASKS
    from train.glue import task_file

    if len(pairs) < n_train + n_valid:
        raise ValueError(f"{n_train + n_valid} minimal pairs needed, {len(pairs)} given")
    rng = random.Random(seed)
    for task in GLUE_2025:
        spec = GLUE_TASKS[task]
        chosen = rng.sample(pairs, n_train + n_valid)
        rows = []
        for good, bad in chosen:
            label = rng.randrange(2)
            first, second = (bad, good) if label else (good, bad)
            rows.append({**{k: first for k in spec.first}, **{k: second for k in spec.second}, "label": label})
        for split, part in (("train", rows[:n_train]), ("valid", rows[n_train:])):
            write_jsonl(task_file(Path(root), task, split), part)
    return {task: n_valid for task in GLUE_2025}


def write_cdi(root: str | Path, sentences: list[str], words: list[str], contexts: int = 2) -> int:
    """``full_eval/aoa/cdi_childes.json`` (the pipeline's ``{word: [{"context": ...}, ...]}``): each word with
    up to ``contexts`` left contexts, the words before it in sentences of ``sentences``. Returns the rows."""
    cdi: dict[str, list[dict]] = {}
    for word in words:
        for text in sentences:
            tokens = text.split()
            if word in tokens[1:] and len(cdi.setdefault(word, [])) < contexts:
                context = " ".join(tokens[: tokens.index(word, 1)])
                if {"context": context} not in cdi[word]:
                    cdi[word].append({"context": context})
    cdi = {w: c for w, c in cdi.items() if c}
    path = Path(root) / "full_eval" / "aoa" / "cdi_childes.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cdi, indent=1) + "\n")
    return sum(len(c) for c in cdi.values())


def write_devbench(root: str | Path, trials: int = 6, things: int = 8) -> dict:
    """``full_eval/devbench/assets/<task>/manifest.csv`` with the pictures of the Winoground-format set in
    ``root/winoground/`` (copied beside each manifest, as DevBench's ``download_data.sh`` lays them out):
    ``gram-trog``: a caption, its picture first, then the swapped scene and another item's two;
    ``lex-viz_vocab``: the first shape word of a caption, the same four pictures; ``sem-things``: pictures.
    Returns the shapes ``babymerge submit --sizes`` gives DevBench."""
    import shutil

    root = Path(root)
    items = [json.loads(line) for line in (root / "winoground" / "winoground.jsonl").read_text().splitlines()]
    if len(items) < max(trials + 1, things):
        raise ValueError(f"{max(trials + 1, things)} Winoground-format items needed, {len(items)} given")
    base = root / "full_eval" / "devbench" / "assets"
    for task in ("gram-trog", "lex-viz_vocab", "sem-things"):
        (base / task / "images").mkdir(parents=True, exist_ok=True)
        lines = ["image1"] if task == "sem-things" else ["image1,image2,image3,image4,text1"]
        for t in range(things if task == "sem-things" else trials):
            item, other = items[t], items[t + 1]
            pictures = [item["image_0"]] if task == "sem-things" else [item["image_0"], item["image_1"],
                                                                         other["image_0"], other["image_1"]]  # fmt: skip
            for rel in pictures:
                shutil.copyfile(root / "winoground" / rel, base / task / "images" / Path(rel).name)
            names = [f"images/{Path(rel).name}" for rel in pictures]
            text = (
                []
                if task == "sem-things"
                else [item["caption_0"] if task == "gram-trog" else item["caption_0"].split()[2]]
            )
            lines.append(",".join(names + text))
        (base / task / "manifest.csv").write_text("\n".join(lines) + "\n")
    return {"lex-viz_vocab": [trials, 4, 1], "trog": [trials, 4, 1], "things": [things, things]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the evaluation_data/ folder to write (new)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-n", type=int, default=2, help="items per subtask (see write_text_tasks)")
    parser.add_argument("--blimp", type=Path, default=None, help="a folder of the official BLiMP <UID>.jsonl files")
    parser.add_argument("--reading-sentences", type=int, default=8)
    parser.add_argument("--no-vqa", action="store_true")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"--out {args.out} exists; give a new folder")
    write_evaluation_data(
        args.out, args.seed, blimp=args.blimp, n=args.n, reading_sentences=args.reading_sentences, vqa=not args.no_vqa
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
