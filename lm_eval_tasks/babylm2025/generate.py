"""Write the BabyLM 2025 text task and group YAMLs of this folder from ``babymerge.babylm.tasks.TASKS``.

    python lm_eval_tasks/babylm2025/generate.py

One YAML per task, in a folder per pipeline task (``blimp/``, ``ewok/``, ...), all including
``_template_yaml`` (choice tasks) or ``_template_wug_yaml``. Groups average their subtasks
unweighted, as the pipeline averages subtask accuracies:
  babylm2025[_fast]_<task>            blimp, blimp_supplement, ewok, entity_tracking, comps (full only)
  babylm2025_entity_tracking_<split>  regular, ambiref, move_contents; babylm2025_entity_tracking averages them
  babylm2025_fast                     every fast task (the groups above, the wug tasks, reading)
  babylm2025_full_zero_shot           every full zero-shot task (the same, plus COMPS and VQA)
The two top groups also list the tasks of ``TASKS`` that other folders define (vqa/, reading/),
when their YAML is there. The generated files are checked in; rerun after changing the table.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from babymerge.babylm.scoring import METRICS  # noqa: E402
from babymerge.babylm.tasks import ENTITY_TRACKING_SPLITS, TASKS  # noqa: E402

GROUPED = ("blimp", "blimp_supplement", "ewok", "entity_tracking", "comps")  # one group per task and kind


def task_yaml(entry) -> str:
    template = "_template_wug_yaml" if entry.reader.startswith("wug") else "_template_yaml"
    return (
        f"include: ../{template}\ntask: {entry.name}\ndataset_kwargs:\n  folder: {entry.folder}\n"
        f"  file: {entry.file}\n  subtask: {entry.subtask}\n  reader: {entry.reader}\n"
    )


def group_yaml(group: str, members: list[str], about: str, metrics=METRICS) -> str:
    lines = [f"# {about}", f"group: {group}", "task:"] + [f"  - {m}" for m in members]
    if metrics:
        lines += ["aggregate_metric_list:"]
        for metric in metrics:
            lines += [f"  - metric: {metric}", "    aggregation: mean", "    weight_by_size: false"]
    return "\n".join(lines + ["metadata:", "  version: 1.0"]) + "\n"


def defined_elsewhere() -> set[str]:
    """Task names the YAMLs of other subfolders (vqa/, reading/) define."""
    names = set()
    for path in HERE.glob("*/*.yaml"):
        if path.parent.name not in {e.task for e in TASKS.values() if e.reader}:
            names.update(re.findall(r"^task: *(\S+)", path.read_text(), flags=re.M))
    return names


def main() -> None:
    ours = [e for e in TASKS.values() if e.reader]
    for folder in {e.task for e in ours}:
        for old in (HERE / folder).glob("*.yaml"):
            old.unlink()
        (HERE / folder).mkdir(exist_ok=True)

    def write(folder: str, name: str, text: str) -> None:
        (HERE / folder / f"{name}.yaml").write_text(text)

    for entry in ours:
        write(entry.task, entry.name, task_yaml(entry))
    top = {"full": [], "fast": []}
    for kind in ("full", "fast"):
        prefix = "babylm2025_fast" if kind == "fast" else "babylm2025"
        for task in GROUPED:
            members = [e.name for e in ours if e.task == task and e.kind == kind]
            if not members:
                continue
            group = f"{prefix}_{task}"
            if task == "entity_tracking" and kind == "full":
                splits = [f"{group}_{s}" for s in ENTITY_TRACKING_SPLITS]
                for split, name in zip(ENTITY_TRACKING_SPLITS, splits):
                    write(
                        task,
                        name,
                        group_yaml(
                            name,
                            [m for m in members if TASKS[m].subtask.startswith(split + "_")],
                            f"BabyLM 2025 entity tracking, {split} split, mean over numbers of operations",
                        ),
                    )
                members = splits
            write(
                task, group, group_yaml(group, members, f"BabyLM 2025 {task} ({kind} evaluation), mean over subtasks")
            )
            top[kind].append(group)
        top[kind] += [e.name for e in ours if e.task not in GROUPED and e.kind == kind]
    elsewhere = defined_elsewhere()
    for kind, group, about in (
        ("fast", "babylm2025_fast", "every BabyLM 2025 fast-evaluation task"),
        ("full", "babylm2025_full_zero_shot", "every BabyLM 2025 full zero-shot task"),
    ):
        members = top[kind] + [
            e.name for e in TASKS.values() if not e.reader and e.kind == kind and e.name in elsewhere
        ]
        members += [n for n in ("winoground_filtered",) if kind == "full"]
        (HERE / f"{group}.yaml").write_text(
            group_yaml(group, members, about + " (no overall average: metrics differ)", ())
        )
    print(f"wrote {len(ours)} task YAMLs and their groups under {HERE}")


if __name__ == "__main__":
    main()
