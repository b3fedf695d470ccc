"""Outputs looked at from outside: file checksums, leftover temporaries, a disk filled up."""

import hashlib
import os
from pathlib import Path

# what every merge output holds beside its weights (the file name a reader of the output sees)
RECIPE = "babymerge_recipe.json"


def checksums(*dirs):
    """sha256 of every file under the directories (names relative to each)."""
    return {
        (str(d), str(f.relative_to(d))): hashlib.sha256(f.read_bytes()).hexdigest()
        for d in dirs
        for f in sorted(Path(d).rglob("*"))
        if f.is_file()
    }


def leftovers(folder, name="out"):
    """Temporaries of an output called ``name`` in ``folder`` (``.out.tmp-*``, ``.out.old-*``)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(f".{name}."))


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` up but ``leave`` bytes (whole pages); the filler file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError:
            pass
    os.truncate(filler, filler.stat().st_size - leave)
    return filler
