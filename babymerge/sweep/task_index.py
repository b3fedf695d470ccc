"""Which lm-eval tasks a sweep runs: the include path, local-data checks, and the names plotted."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BabyMergeError


def default_include_path() -> list[str]:
    """The project's own lm-eval tasks, found relative to the installed package (not to the
    current directory; ``babymerge.tasks_path``), so a sweep started anywhere evaluates our
    local-data tasks."""
    from ..tasks import tasks_path

    return [tasks_path()]


def resolve_include_path(include_path) -> list[str]:
    """``--include-path`` as absolute folders (``os.pathsep``-separated text or a list); each must exist."""
    if include_path is None:
        return default_include_path()
    if isinstance(include_path, (str, Path)):
        include_path = [p for p in str(include_path).split(os.pathsep) if p]
    resolved = []
    for p in include_path:
        if not Path(p).is_dir():
            raise BabyMergeError(
                f"--include-path {str(p)!r} is not a directory; "
                "give the folder of task YAMLs (the project's: lm_eval_tasks)"
            )
        resolved.append(str(Path(p).resolve()))
    return resolved


# Data that is read from local files: a custom loader (our tasks), a local folder, or a
# datasets builder that reads the data_files it is given.
_LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "imagefolder", "audiofolder", "pandas"}


def check_tasks_are_local(task_manager, tasks: list[str], include_path: list[str]) -> None:
    """Refuse tasks that would quietly come from lm-eval's own task folder or the hub.

    lm-eval indexes its built-in tasks besides ``include_path``; a name our folder does not
    define (a typo, a wrong ``--include-path``, a task from another directory) is silently
    resolved to lm-eval's own task of that name, e.g. ``blimp_*`` reading ``nyu-mll/blimp``
    from the hub. So every requested task, group and tag is expanded to its leaf tasks, and each
    must be defined in a YAML under ``include_path`` and read local data.
    """
    from lm_eval.tasks._index import Kind

    index = task_manager.task_index
    roots = [Path(p) for p in include_path]
    problems: list[str] = []

    def visit(name: str, via: str, seen: set) -> None:
        if name in seen:
            return
        seen.add(name)
        entry = index.get(name)
        where = f" (in {via})" if via else ""
        if entry is None:
            problems.append(f"{name!r}{where} is not a task, group or tag of {include_path}")
            return
        if entry.kind == Kind.TAG:
            for child in sorted(entry.tags):
                visit(child, name, seen)
            return
        path = Path(entry.yaml_path).resolve() if entry.yaml_path else None
        if path is None or not any(path.is_relative_to(r) for r in roots):
            problems.append(f"{name!r}{where} is defined by lm-eval itself ({path}), not in {include_path}")
            return
        cfg = entry.cfg or {}
        if entry.kind == Kind.GROUP:
            for child in cfg.get("task", []):
                if isinstance(child, str):
                    visit(child, name, seen)
                elif isinstance(child, dict) and child.get("task") in index and set(child) <= {"task", "task_alias"}:
                    visit(child["task"], name, seen)
                elif isinstance(child, dict):  # a task defined inline in the group (or overriding one)
                    base = index[child["task"]].cfg or {} if child.get("task") in index else {}
                    check_source(str(child.get("task")), name, {**base, **child}, path)
            return
        check_source(name, via, cfg, path)

    def check_source(name: str, via: str, cfg: dict, path) -> None:
        source = cfg.get("dataset_path")
        local = source is None or source in _LOCAL_BUILDERS or Path(str(source)).expanduser().exists()
        if "custom_dataset" in cfg or local:
            return
        where = f" (in {via})" if via else ""
        problems.append(f"{name!r}{where} reads dataset_path {source!r}, not local files ({path})")

    for task in tasks:
        visit(task, "", set())
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise BabyMergeError(
            f"{'; '.join(problems[:5])}{more}: a sweep evaluates "
            "only tasks defined under --include-path that read local data; fix the task names or --include-path, "
            "or pass --allow-hub-tasks to evaluate lm-eval's own tasks"
        )


def plotted_tasks(task_manager, tasks: list[str]) -> list[str]:
    """The names the plots show: each requested task or group, except that a group or tag with
    no score of its own is replaced by its members (recursively). The BabyLM 2025 suites are
    such groups (their tasks' metrics differ: accuracy, Spearman, ΔR²), so ``--tasks
    babylm2025_fast`` plots BLiMP, EWoK, entity tracking, ... instead of nothing."""
    from lm_eval.tasks._index import Kind

    index = task_manager.task_index
    names: list[str] = []

    def add(name: str) -> None:
        entry = index.get(name)
        cfg = (entry.cfg or {}) if entry is not None else {}
        if entry is not None and entry.kind == Kind.TAG:
            members = sorted(entry.tags)
        elif entry is not None and entry.kind == Kind.GROUP and not cfg.get("aggregate_metric_list"):
            members = [c if isinstance(c, str) else c.get("task") for c in cfg.get("task", [])]
        else:
            names.append(name)
            return
        for member in members:
            add(member)

    for task in tasks:
        add(task)
    return list(dict.fromkeys(names))
