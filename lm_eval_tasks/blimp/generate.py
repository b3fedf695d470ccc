"""Write the BLiMP task and group YAMLs of this folder from the BLiMP files themselves.

    python lm_eval_tasks/blimp/generate.py [--source DIR]   # DIR: the 67 official <UID>.jsonl files

Each paradigm's ``field`` and ``linguistics_term`` are read from its first line. Groups:
  blimp                         all 67 paradigms, accuracy micro-averaged over pairs
  blimp_macro                   the same, macro-averaged over paradigms
  blimp_field_<field>           morphology, syntax, semantics, syntax_semantics
  blimp_phenomenon_<phenomenon> the 12 phenomena of the BLiMP paper's tables
                                (its "s-selection" paradigms belong to argument structure)
  blimp_filtered                the BabyLM pipeline's filtered files, same 67 paradigms
  blimp_supplement              the BabyLM supplement (5 tasks)
The generated files are checked in; rerun this only if the paradigm list changes.
"""

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from babymerge.babylm.scoring import METRICS  # noqa: E402
from babymerge.babylm.tasks import SUPPLEMENT  # noqa: E402

PHENOMENON = {"s-selection": "argument_structure"}  # BLiMP paper, Table 4: s-selection is argument structure
FIELD = {"syntax/semantics": "syntax_semantics"}


def task_yaml(task: str, folder: str, name: str) -> str:
    return f"include: _template_yaml\ntask: {task}\ndataset_kwargs:\n  folder: {folder}\n  name: {name}\n"


def group_yaml(group: str, tasks: list[str], weight_by_size: bool, about: str) -> str:
    lines = [f"# {about}", f"group: {group}", "task:"] + [f"  - {t}" for t in tasks]
    lines += ["aggregate_metric_list:"]
    for metric in METRICS:
        lines += [
            f"  - metric: {metric}",
            "    aggregation: mean",
            f"    weight_by_size: {str(weight_by_size).lower()}",
        ]
    lines += ["metadata:", "  version: 1.0"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE.parents[2] / "shared" / "data" / "blimp")
    args = parser.parse_args()
    paradigms = {}
    for path in sorted(args.source.glob("*.jsonl")):
        row = json.loads(path.read_text().splitlines()[0])
        paradigms[path.stem] = (
            FIELD.get(row["field"], row["field"]),
            PHENOMENON.get(row["linguistics_term"], row["linguistics_term"]),
        )
    assert len(paradigms) == 67, f"expected the 67 BLiMP paradigms in {args.source}, found {len(paradigms)}"
    for old in HERE.glob("*.yaml"):
        old.unlink()

    def write(name: str, text: str) -> None:
        (HERE / f"{name}.yaml").write_text(text)

    uids = sorted(paradigms)
    for uid in uids:
        write(f"blimp_{uid}", task_yaml(f"blimp_{uid}", "blimp", uid))
        write(f"blimp_filtered_{uid}", task_yaml(f"blimp_filtered_{uid}", "blimp_filtered", uid))
    for name in SUPPLEMENT:
        write(f"blimp_supplement_{name}", task_yaml(f"blimp_supplement_{name}", "supplement_filtered", name))
    every = [f"blimp_{u}" for u in uids]
    write("blimp", group_yaml("blimp", every, True, "BLiMP, all 67 paradigms, micro-averaged over pairs"))
    write(
        "blimp_macro", group_yaml("blimp_macro", every, False, "BLiMP, all 67 paradigms, macro-averaged over paradigms")
    )
    for field in sorted({f for f, _ in paradigms.values()}):
        tasks = [f"blimp_{u}" for u in uids if paradigms[u][0] == field]
        write(
            f"blimp_field_{field}", group_yaml(f"blimp_field_{field}", tasks, True, f"BLiMP paradigms of field {field}")
        )
    for phenomenon in sorted({p for _, p in paradigms.values()}):
        tasks = [f"blimp_{u}" for u in uids if paradigms[u][1] == phenomenon]
        write(
            f"blimp_phenomenon_{phenomenon}",
            group_yaml(f"blimp_phenomenon_{phenomenon}", tasks, True, f"BLiMP phenomenon {phenomenon}"),
        )
    write("blimp_filtered", group_yaml("blimp_filtered", [f"blimp_filtered_{u}" for u in uids], True,
                                       "BabyLM's filtered BLiMP (evaluation_data/blimp_filtered), micro-averaged"))  # fmt: skip
    write("blimp_supplement", group_yaml("blimp_supplement", [f"blimp_supplement_{n}" for n in SUPPLEMENT], True,
                                         "BabyLM's BLiMP supplement (evaluation_data/supplement_filtered), micro-averaged"))  # fmt: skip
    print(f"wrote {len(list(HERE.glob('*.yaml')))} YAML files in {HERE}")


if __name__ == "__main__":
    main()
