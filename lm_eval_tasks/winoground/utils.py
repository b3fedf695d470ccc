"""Winoground for lm-eval, scored by image-conditioned caption likelihood.

Every item has two images and two captions; the model gives the four scores
s(c_i, I_j) = log P(caption_i | image_j) (context: the image token; continuation: the
caption). Following Thrush et al. (2022):
  text score  : for each image, its own caption scores higher  s(c0,I0) > s(c1,I0) and s(c1,I1) > s(c0,I1)
  image score : for each caption, its own image scores higher  s(c0,I0) > s(c0,I1) and s(c1,I1) > s(c1,I0)
  group score : both.
Ties count as wrong (strict >, ``babymerge.babylm.scoring.is_right``). Each is a per-item 0/1 averaged over items, so lm-eval
reports it with its standard error.

Data are read from ``$BABYMERGE_DATA`` (default ``./evaluation_data``), never downloaded:
* ``winoground/``: a local copy of the hub's facebook/winoground test split: a JSONL file
  (``id, image_0, image_1, caption_0, caption_1, tag, secondary_tag, num_main_preds,
  collapsed_tag``, images as paths relative to the file) or parquet/arrow files with the
  hub's image columns, or a ``datasets.save_to_disk`` folder;
* ``winoground_filtered/winoground.jsonl``: the BabyLM pipeline's filtered rows (one image
  each, ``image_idx`` into the test split above, ``image_key`` image_0/image_1, the right
  caption always ``caption_0``).
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask
from PIL import Image, UnidentifiedImageError

from babymerge.babylm.scoring import choice_metrics, is_right
from babymerge.data import DATA_ENV, evaluation_data_dir, read_jsonl
from babymerge.errors import BabyMergeError

FIELDS = ("id", "image_0", "image_1", "caption_0", "caption_1")
GET_IT = (
    "Winoground is gated on the hub (facebook/winoground): accept its terms there, then save the "
    "test split locally, e.g. `datasets.load_dataset('facebook/winoground', split='test').save_to_disk(DIR)`; "
    "for a synthetic stand-in run `python -m babymerge.data.synthetic_winoground --out DIR`."
)


# -- loading ------------------------------------------------------------------------------------
def _source_dir(subdir: str) -> Path:
    directory = evaluation_data_dir() / subdir
    if not directory.is_dir():
        raise BabyMergeError(
            f"Winoground data not found: {directory} does not exist. Put it there or set {DATA_ENV}. {GET_IT}"
        )
    return directory


def _open_image(item_id, path: Path) -> Image.Image:
    if not path.is_file():
        raise BabyMergeError(f"Winoground item {item_id}: image file {path} does not exist")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise BabyMergeError(f"Winoground item {item_id}: cannot read image {path} ({err})") from err


def _check_item(item: dict, where: str) -> dict:
    missing = [f for f in FIELDS if item.get(f) in (None, "")]
    if missing:
        raise BabyMergeError(
            f"{where}: Winoground item {item.get('id', '?')} has no {', '.join(missing)}; every item needs {', '.join(FIELDS)}"
        )
    return item


def read_items(directory: Path) -> list[dict]:
    """Items with PIL images, from JSONL + image files or from the hub's parquet/arrow layout."""
    jsonl = sorted(directory.glob("*.jsonl"))
    if jsonl:
        items = []
        for line_no, item in read_jsonl(jsonl[0]):
            _check_item(item, f"{jsonl[0]}, line {line_no}")
            for key in ("image_0", "image_1"):
                item[key] = _open_image(item["id"], jsonl[0].parent / item[key])
            items.append(item)
        return items
    if (directory / "dataset_info.json").is_file() or (directory / "state.json").is_file():
        dataset = datasets.load_from_disk(str(directory))
    else:
        files = sorted(str(p) for p in directory.rglob("*") if p.suffix in (".parquet", ".arrow"))
        if not files:
            raise BabyMergeError(
                f"no Winoground files (*.jsonl, *.parquet, *.arrow or a save_to_disk folder) in {directory}. {GET_IT}"
            )
        dataset = datasets.load_dataset(files[0].rsplit(".", 1)[1], data_files=files, split="train")
    if isinstance(dataset, datasets.DatasetDict):
        dataset = dataset["test"]
    return [_check_item(dict(item), str(directory)) for item in dataset]


def load_winoground(subdir: str = "winoground", **kwargs) -> datasets.DatasetDict:
    """``custom_dataset`` for the ``winoground`` task."""
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(read_items(_source_dir(subdir)))})


def load_winoground_filtered(
    subdir: str = "winoground_filtered", images_subdir: str = "winoground", **kwargs
) -> datasets.DatasetDict:
    """``custom_dataset`` for ``winoground_filtered``: the pipeline's rows, with their images
    looked up in the local copy of the test split by ``image_idx`` and ``image_key``."""
    directory = _source_dir(subdir)
    items = read_items(_source_dir(images_subdir))
    rows = []
    path = directory / "winoground.jsonl"
    if not path.is_file():
        raise BabyMergeError(
            f"{path} not found: get winoground_filtered from the BabyLM evaluation data and put it under {DATA_ENV}"
        )
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            image = items[int(row["image_idx"])][row["image_key"]]
        except (json.JSONDecodeError, KeyError, IndexError, ValueError) as err:
            raise BabyMergeError(f"{path}, line {line_no}: bad row ({type(err).__name__}: {err})") from None
        if not row.get("caption_0") or not row.get("caption_1"):
            raise BabyMergeError(f"{path}, line {line_no}: a caption is missing")
        rows.append({**row, "image": image})
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


# -- subsets ---------------------------------------------------------------------------------------
def _where(field, value):
    return lambda dataset: dataset.filter(lambda doc: str(doc[field]) == str(value))


object_items = _where("collapsed_tag", "Object")
relation_items = _where("collapsed_tag", "Relation")
both_items = _where("collapsed_tag", "Both")
one_main_predicate = _where("num_main_preds", 1)
two_main_predicates = _where("num_main_preds", 2)


def filtered_image(doc) -> list:
    return [doc["image"]]


# -- scoring ---------------------------------------------------------------------------------------
def scores(s: dict[tuple[int, int], float]) -> dict[str, float]:
    """Text, image and group score of one item from s[(caption i, image j)]; ties are wrong."""
    text = is_right([s[0, 0], s[1, 0]]) and is_right([s[1, 1], s[0, 1]])
    image = is_right([s[0, 0], s[0, 1]]) and is_right([s[1, 1], s[1, 0]])
    return {"text_score": float(text), "image_score": float(image), "group_score": float(text and image)}


PAIRS = [(0, 0), (0, 1), (1, 0), (1, 1)]  # (caption, image) of the four requests, in order


class WinogroundTask(ConfigurableTask):
    """Four requests per item (each caption under each image), scored per item."""

    def __init__(self, config: dict):
        # lm-eval hands a `class:` task its whole YAML, `class` key included.
        super().__init__(config={k: v for k, v in config.items() if k != "class"})

    def construct_requests(self, doc, ctx, **kwargs):
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        delimiter = self.config.target_delimiter
        return [
            Instance(
                request_type="loglikelihood",
                doc=doc,
                idx=k,
                arguments=(ctx, delimiter + doc[f"caption_{i}"], {"visual": [doc[f"image_{j}"]]}),
                **kwargs,
            )  # fmt: skip
            for k, (i, j) in enumerate(PAIRS)
        ]

    def process_results(self, doc, results):
        return scores({pair: result[0] for pair, result in zip(PAIRS, results)})


# Placeholders so lm-eval accepts the metric names; process_results computes the values.
def text_score(*args, **kwargs): ...
def image_score(*args, **kwargs): ...
def group_score(*args, **kwargs): ...


def filtered_results(doc, results) -> dict[str, float]:
    """winoground_filtered: caption_0 is the right one; ``acc`` (a tie is wrong), ``acc_pipeline``
    (the BabyLM pipeline's argmax: a tie picks caption_0, right), ``ties``, as every choice task."""
    return choice_metrics(result[0] for result in results)
