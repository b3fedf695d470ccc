"""Small training corpora the project writes itself, for the demo and the tests.

    python -m train.demo_data --out data/demo

* ``text/corpus.train``: sentences of a toy English grammar (``babymerge.toy``), one per
  line, in the layout of BabyLM's ``.train`` files;
* ``multimodal/captions.jsonl`` + ``multimodal/images/*.png``: coloured shapes in spatial
  relations with their captions ("a red square above a blue circle"), drawn like the
  synthetic Winoground items, so a model trained on them has seen the kind of scene that set
  asks about. Encode the images with ``python -m train.encode_images``.

Deterministic from the seed. A stand-in for BabyLM's data in shape only.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from babymerge.data.synthetic_winoground import COLOURS, RELATIONS, SHAPES, caption, draw_scene
from babymerge.output import atomic_output_dir
from babymerge.toy import synthetic_sentences


def write_demo_corpora(out: str | Path, n_sentences: int = 4000, n_captions: int = 1000, seed: int = 0, overwrite: bool = True) -> Path:
    rng = random.Random(seed)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "text").mkdir()
        (tmp / "text" / "corpus.train").write_text("\n".join(synthetic_sentences(n_sentences, seed)) + "\n")
        (tmp / "multimodal" / "images").mkdir(parents=True)
        with open(tmp / "multimodal" / "captions.jsonl", "w") as f:
            for i in range(n_captions):
                c1, c2 = rng.sample(sorted(COLOURS), 2)
                scene = ((c1, rng.choice(SHAPES)), rng.choice(sorted(RELATIONS)), (c2, rng.choice(SHAPES)))
                name = "images/" + "_".join([*scene[0], scene[1].replace(" ", "-"), *scene[2]]) + ".png"
                if not (tmp / "multimodal" / name).is_file():
                    draw_scene(*scene).save(tmp / "multimodal" / name)
                f.write(json.dumps({"id": i, "image": name, "caption": caption(*scene)}) + "\n")
    return Path(out)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m train.demo_data", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data/demo")
    p.add_argument("--sentences", type=int, default=4000)
    p.add_argument("--captions", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"wrote {write_demo_corpora(args.out, args.sentences, args.captions, args.seed)}")


if __name__ == "__main__":
    main()
