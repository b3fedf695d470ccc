"""Evaluation data: where it lives, and small data sets the project generates itself.

Evaluation files are never downloaded at run time. They are read from one directory,
``$BABYMERGE_DATA`` (default ``./evaluation_data``), laid out like the BabyLM evaluation
pipeline's ``evaluation_data/`` folder: ``blimp/``, ``blimp_filtered/``,
``supplement_filtered/``, ``winoground/`` (a local copy of the hub's facebook/winoground),
``winoground_filtered/``.
"""

import os
from pathlib import Path

DATA_ENV = "BABYMERGE_DATA"
DEFAULT_DATA_DIR = "evaluation_data"


def evaluation_data_dir() -> Path:
    """The evaluation data directory: ``$BABYMERGE_DATA`` or ``./evaluation_data``."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR)


def quiet_custom_dataset_warning() -> None:
    """lm-eval warns, once per task, that a ``custom_dataset`` task can take ``--metadata``;
    with 67 BLiMP paradigms that buries useful output. Drop that one message only."""
    import logging

    logging.getLogger("lm_eval.api.task").addFilter(
        lambda record: "Custom kwargs can be passed" not in record.getMessage()
    )
