"""BabyLM 2025 VQA (multimodal track, full evaluation): 8-way answer ranking given the image.

Each row of the pipeline's ``vqa_filtered/*.jsonl`` has ``question``, ``target_ans``, seven
``distractors`` and ``idx_in_hf_dataset``, the row of the image in the hub's VQAv2 validation
split (``HuggingFaceM4/VQAv2``, split ``validation``). Scored as the official pipeline scores it
(``sentence_zero_shot``, backend ``causal``): the sentence is ``question + " " + answer``,
only the tokens of the completion ``" " + answer`` are scored, the candidate with the highest
**sum** of log-probabilities wins, the right answer is candidate 0. In lm-eval terms: context
``question``, choices ``[target_ans] + distractors`` after the delimiter ``" "``, the image as
``visual``.

Metrics: ``acc``, ``acc_pipeline``, ``ties``, as every choice task (``babymerge.babylm.scoring``):
a tie between the right answer and a distractor is wrong in ``acc``, right in ``acc_pipeline``
(the pipeline's argmax takes the first maximum).

Data, read from ``$BABYMERGE_DATA`` (default ``./evaluation_data``), never downloaded:

* ``full_eval/vqa_filtered/*.jsonl``: the pipeline's rows (files read in name order);
* ``vqav2_validation/``: a local copy of VQAv2's validation split with its ``image`` column,
  either a ``datasets`` ``save_to_disk`` folder (``load_dataset("HuggingFaceM4/VQAv2",
  split="validation").save_to_disk(DIR)``) or its parquet/arrow files (concatenated in name
  order). Row ``idx_in_hf_dataset`` of it is the item's image, as in the pipeline.

Images stay encoded (JPEG/PNG bytes, opened lazily) until the model reads them: ``--model
babymerge`` decodes each into a copy it drops once encoded, so lm-eval's requests, which hold
every item's image until the run ends, hold them encoded, never all decoded at once
(``test_vqa_images_stay_undecoded_in_the_requests``).
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import datasets
from PIL import Image

from babymerge.babylm.scoring import choice_metrics
from babymerge.data import DATA_ENV, evaluation_data_dir, read_jsonl, test_split
from babymerge.errors import BabyMergeError

FIELDS = ("question", "target_ans", "distractors", "idx_in_hf_dataset")
IMAGES_SUBDIR = "vqav2_validation"
GET_IMAGES = (
    "save VQAv2's validation split there once: `datasets.load_dataset('HuggingFaceM4/VQAv2', split='validation')"
    f".save_to_disk('${DATA_ENV}/{IMAGES_SUBDIR}')` (or copy its parquet files into that folder)"
)


def read_rows(directory: Path) -> list[dict]:
    """The pipeline's VQA rows, checked: every field present, seven distractors."""
    files = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
    if not files:
        raise BabyMergeError(
            f"no VQA files (*.jsonl) in {directory}: put the pipeline's full_eval/vqa_filtered/ there or set {DATA_ENV}"
        )
    rows = []
    for path in files:
        for line_no, row in read_jsonl(path):
            missing = [f for f in FIELDS if row.get(f) in (None, "")]
            if missing or not isinstance(row["distractors"], list):
                raise BabyMergeError(
                    f"{path}, line {line_no}: VQA row needs {', '.join(FIELDS)} (distractors a list); missing {missing}"
                )
            rows.append(row)
    return rows


@lru_cache(maxsize=4)
def image_column(directory: str) -> datasets.Dataset:
    """The ``image`` column of the local VQAv2 validation copy, undecoded (bytes/path)."""
    path = Path(directory)
    if not path.is_dir():
        raise BabyMergeError(f"VQA images not found: {path} does not exist; {GET_IMAGES}")
    if (
        (path / "dataset_info.json").is_file()
        or (path / "state.json").is_file()
        or (path / "dataset_dict.json").is_file()
    ):
        dataset = datasets.load_from_disk(str(path))
    else:
        files = sorted(str(p) for p in path.rglob("*") if p.suffix in (".parquet", ".arrow"))
        if not files:
            raise BabyMergeError(f"no VQAv2 files (save_to_disk folder, *.parquet, *.arrow) in {path}; {GET_IMAGES}")
        dataset = datasets.load_dataset(files[0].rsplit(".", 1)[1], data_files=files, split="train")
    if isinstance(dataset, datasets.DatasetDict):
        if "validation" not in dataset:
            raise BabyMergeError(f"{path} has splits {list(dataset)}, not 'validation'; {GET_IMAGES}")
        dataset = dataset["validation"]
    if "image" not in dataset.column_names:
        raise BabyMergeError(f"{path} has no 'image' column (columns: {dataset.column_names}); {GET_IMAGES}")
    return dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))


def load_vqa(
    subdir: str = "full_eval/vqa_filtered", images_subdir: str = IMAGES_SUBDIR, **kwargs
) -> datasets.DatasetDict:
    """``custom_dataset``: the rows, each with the location of its image (checked up front)."""
    rows = read_rows(evaluation_data_dir() / subdir)
    images = evaluation_data_dir() / images_subdir
    n = len(image_column(str(images)))
    for i, row in enumerate(rows):
        if not 0 <= int(row["idx_in_hf_dataset"]) < n:
            raise BabyMergeError(
                f"VQA row {i}: idx_in_hf_dataset={row['idx_in_hf_dataset']} is outside {images} ({n} rows); "
                "is it VQAv2 validation?"
            )
    # ``preds``: what the pipeline reports when it picks each candidate (babymerge.babylm.scoring.pipeline_prediction)
    docs = [{**row, "images_dir": str(images), "preds": [" " + a for a in doc_to_choice(row)]} for row in rows]
    return test_split(docs)


def doc_to_image(doc) -> list[Image.Image]:
    """The item's picture, opened lazily from its stored bytes (decoded when the model reads it)."""
    value = image_column(doc["images_dir"])[int(doc["idx_in_hf_dataset"])]["image"]
    if value.get("bytes"):
        return [Image.open(io.BytesIO(value["bytes"]))]
    return [Image.open(value["path"])]


def doc_to_choice(doc) -> list[str]:
    return [doc["target_ans"], *doc["distractors"]]


def process_results(doc, results) -> dict[str, float]:
    """The right answer is candidate 0: ``babymerge.babylm.scoring.choice_metrics``."""
    return choice_metrics(result[0] for result in results)
