"""A synthetic Winoground-format set: coloured shapes in spatial relations, drawn with PIL.

    python -m babymerge.data.synthetic_winoground --out evaluation_data/synthetic_winoground --items 40

Each item has two images and two captions with the same words in a different order, as in
Winoground (Thrush et al., 2022), starting from "a red square above a blue circle":
"a red circle above a blue square" (the nouns swap: tag Object), "a blue square above a red
circle" (the colour adjectives swap, which Winoground counts as Relation) or "a blue circle
above a red square" (the noun phrases swap around the preposition: tag Both).
caption_i describes image_i. The set is deterministic from its seed and written in the
hub's ``facebook/winoground`` layout (``id, image_0, image_1, caption_0, caption_1, tag,
secondary_tag, num_main_preds, collapsed_tag``) as JSONL plus PNG files.

It exists so the tests and the demo can run the Winoground task end to end without the
(gated) real data. It is NOT a stand-in for the real benchmark: its scores say nothing
about a model's Winoground performance.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from ..publish import atomic_output_dir

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60), "yellow": (240, 210, 30)}
SHAPES = ("square", "circle", "triangle")
RELATIONS = {"above": (0, -1), "below": (0, 1), "left of": (-1, 0), "right of": (1, 0)}
SIZE = 64


def draw_scene(
    first: tuple[str, str],
    relation: str,
    second: tuple[str, str],
    size: int = SIZE,
    jitter: random.Random | None = None,
    background="white",
    radius: float = 1 / 8,
) -> Image.Image:
    """``first`` = (colour, shape) placed ``relation`` ``second`` on a ``background`` canvas,
    each shape ``radius`` x ``size`` from its centre to its sides. With ``jitter`` (a random
    generator) each shape moves by up to size/16 and its radius varies by up to size/32, so
    that a training set can hold many different pictures of one scene."""
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    dx, dy = RELATIONS[relation]
    centre, offset = size / 2, size / 4
    positions = [(centre + dx * offset, centre + dy * offset), (centre - dx * offset, centre - dy * offset)]
    half = radius * size
    for (colour, shape), (x, y) in zip((first, second), positions):
        r = half
        if jitter is not None:
            x, y = x + jitter.uniform(-1, 1) * size / 16, y + jitter.uniform(-1, 1) * size / 16
            r += jitter.uniform(-1, 1) * size / 32
        box = [x - r, y - r, x + r, y + r]
        fill = COLOURS[colour]
        if shape == "square":
            draw.rectangle(box, fill=fill)
        elif shape == "circle":
            draw.ellipse(box, fill=fill)
        else:
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    return image


def caption(first, relation, second) -> str:
    return f"a {first[0]} {first[1]} {relation} a {second[0]} {second[1]}"


def make_items(n: int, seed: int = 0) -> list[dict]:
    """Item descriptions (scenes and captions), alternating Object and Relation swaps."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        c1, c2 = rng.sample(sorted(COLOURS), 2)
        s1, s2 = rng.sample(SHAPES, 2)
        relation = rng.choice(sorted(RELATIONS))
        scene_0 = ((c1, s1), relation, (c2, s2))
        kind = i % 3
        if kind == 0:  # the nouns swap: the objects trade shapes
            scene_1, tag, preds = ((c1, s2), relation, (c2, s1)), "Object", 1
        elif kind == 1:  # the colour words swap (Winoground counts adjective swaps as relations)
            scene_1, tag, preds = ((c2, s1), relation, (c1, s2)), "Relation", 1
        else:  # the whole noun phrases swap around the preposition: objects and relation
            scene_1, tag, preds = ((c2, s2), relation, (c1, s1)), "Both", 2
        collapsed = tag
        items.append({"id": i, "scenes": (scene_0, scene_1), "caption_0": caption(*scene_0), "caption_1": caption(*scene_1),
                      "tag": tag, "secondary_tag": "Symbolic", "num_main_preds": preds, "collapsed_tag": collapsed})  # fmt: skip
    return items


def write_dataset(out: str | Path, n: int = 40, seed: int = 0, overwrite: bool = True, **draw) -> Path:
    """Write ``winoground.jsonl`` and ``images/*.png`` under ``out`` (atomically); ``draw``:
    ``draw_scene``'s ``background`` and ``radius``."""
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        with open(tmp / "winoground.jsonl", "w") as f:
            for item in make_items(n, seed):
                row = {k: v for k, v in item.items() if k != "scenes"}
                for j, scene in enumerate(item["scenes"]):
                    name = f"images/ex_{item['id']}_img_{j}.png"
                    draw_scene(*scene, **draw).save(tmp / name)
                    row[f"image_{j}"] = name
                f.write(json.dumps(row) + "\n")
    return Path(out)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic Winoground-format set.")
    parser.add_argument("--out", default="evaluation_data/synthetic_winoground")
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {write_dataset(args.out, args.items, args.seed)}")


if __name__ == "__main__":
    main()
