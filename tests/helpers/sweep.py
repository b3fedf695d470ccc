"""What a sweep runs on: a tiny minimal-pairs task, and training runs of word-count checkpoints."""

import json
import shutil
from pathlib import Path

from conftest import write_pairs_task

PAIRS = [("The dog sees the cat.", "The dog see the cat."), ("A girl likes the ball.", "A girl like the ball."),
         ("Some boys help the teacher.", "Some boys helps the teacher."), ("This bird finds a tree.", "This bird find a tree.")]  # fmt: skip
# (name, words_seen in the multimodal run's trainer_state, in the language-only run's; None: no trainer_state)
WORD_CHECKPOINTS = [
    ("chck_2M", 2_000_517, 2_003_210),
    ("chck_1M", 1_000_104, None),
    ("chck_10M", 10_001_000, 10_000_020),
]


def write_tasks(root: Path) -> Path:
    """``mini_pairs`` over the first three of ``PAIRS``, in ``root/tasks`` (returned)."""
    return write_pairs_task(root, PAIRS[:3])


def fake_run(root: Path, source: Path, role: int) -> Path:
    """A training run of word-count checkpoints (copies of a toy checkpoint) and one epoch checkpoint."""
    for i, (name, *words) in enumerate(WORD_CHECKPOINTS + [("ckpt-ep1", 12_345_678, 12_000_000)]):
        shutil.copytree(source, root / name)
        if words[role] is not None:
            (root / name / "trainer_state.json").write_text(
                json.dumps({"global_step": 10 * (i + 1), "words_seen": words[role]})
            )
    return root
