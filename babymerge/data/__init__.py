"""Evaluation data: where it lives, and small data sets the project generates itself.

Evaluation files are never downloaded at run time. They are read from one directory,
``$BABYMERGE_DATA`` (default ``./evaluation_data``), laid out like the BabyLM evaluation
pipeline's ``evaluation_data/`` folder: ``blimp/``, ``blimp_filtered/``,
``supplement_filtered/``, ``winoground/`` (a local copy of the hub's facebook/winoground),
``winoground_filtered/``.
"""

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import BabyMergeError

DATA_ENV = "BABYMERGE_DATA"
DEFAULT_DATA_DIR = "evaluation_data"


def evaluation_data_dir() -> Path:
    """The evaluation data directory: ``$BABYMERGE_DATA`` or ``./evaluation_data``."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR)


def read_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """``(line number, parsed value)`` of each non-blank line of a JSONL data file; a line that
    is not JSON is an error naming the file and line (the caller checks the value's fields)."""
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as err:
            raise BabyMergeError(f"{path}, line {line_no}: not valid JSON ({err.msg})") from None


def test_split(rows: list[dict]):
    """``{"test": rows}`` for a task's ``custom_dataset``, rows of plain JSON values. Its fingerprint
    is a hash of the rows' JSON: ``Dataset.from_list`` would hash them through dill, ~20 ms a
    task, seconds at every start of a suite of ~90 tasks."""
    import datasets
    from datasets.table import InMemoryTable

    fingerprint = hashlib.blake2b(json.dumps(rows, sort_keys=True).encode(), digest_size=16).hexdigest()
    return datasets.DatasetDict({"test": datasets.Dataset(InMemoryTable.from_pylist(rows), fingerprint=fingerprint)})


def quiet_custom_dataset_warning() -> None:
    """lm-eval warns, once per task, that a ``custom_dataset`` task can take ``--metadata``;
    with 67 BLiMP paradigms that buries useful output. Drop that one message only."""
    import logging

    logging.getLogger("lm_eval.api.task").addFilter(
        lambda record: "Custom kwargs can be passed" not in record.getMessage()
    )
