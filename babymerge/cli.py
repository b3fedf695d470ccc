"""The ``babymerge`` command line.

babymerge merge --mm runs/mm/ckpt --lang runs/lang/ckpt --alpha 0.3 --out merged/
babymerge merge ... --method ties --base runs/mm/init --density 0.3
babymerge merge ... --module-alpha 'model.embed_tokens.*=0.5' --alpha 0.3
babymerge merge ... --alpha-gradient 0,0.5                # 0 at the first decoder layer, 0.5 at the last
babymerge merge ... --mergekit-yaml recipe.yml      # also (or only) write a mergekit config
babymerge methods [--markdown]                      # list merge methods and their options
babymerge sweep --mm runs/mm --lang runs/lang --alphas 0:1:0.1 --tasks blimp,winoground --out sweeps/x
babymerge submit --results results/ --model NAME --out submission/ [--vision] [--allow-partial]
babymerge submit --format 2025 --results results/main --model NAME --out submission/ [--fast-results DIR]
babymerge devbench --model CKPT [--lang LANG --alpha A] --data DEVBENCH_DIR --out results/NAME/main [--pipeline DIR]
babymerge aoa --mm runs/mm --lang runs/lang --alpha 0.3 --data cdi_childes.json --out aoa/ [--cdi cdi_human.csv]
babymerge aoa-score aoa/surprisal.json --cdi cdi_human.csv   # the organisers' AoA score, learning curves
babymerge tasks-path                                # the lm-eval tasks folder, for lm_eval --include_path
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import warnings
from pathlib import Path

from .errors import BabyMergeError

# How each command spells the library's arguments: library errors name an argument in
# backquotes (`out`, `overwrite='any'`); the command line shows its flag instead.
_OUT_FLAGS = {"out": "--out"}
_MERGE_FLAGS = {
    **_OUT_FLAGS, "mm_ckpt": "--mm", "lang_ckpt": "--lang", "base_ckpt": "--base", "path": "--mergekit-yaml",
    "max_shard_size": "--max-shard-size", "overwrite=True": "--overwrite", "overwrite='any'": "--overwrite-any",
    "allow_different_tokenizers=True": "--force-tokenizer",
}  # fmt: skip
_SWEEP_FLAGS = {
    **_OUT_FLAGS,
    "alphas": "--alphas",
    "mm_run": "--mm",
    "lang_run": "--lang",
    "model_args": "--model-args",
}
_FLAGS = {"merge": _MERGE_FLAGS, "sweep": _SWEEP_FLAGS}


def in_flags(message: str, flags: dict[str, str]) -> str:
    """``message`` with each backquoted argument the command has a flag for as that flag:
    `` `out` `` -> ``--out``, `` `out='merged'` `` -> ``--out merged``."""

    def flag(match: re.Match) -> str:
        name = match.group(1)
        if name in flags:
            return flags[name]
        key, sep, value = name.partition("=")
        return f"{flags[key]} {value.strip(chr(39))}" if sep and key in flags else match.group(0)

    return re.sub(r"`([^`\s]+)`", flag, message)


def _add_merge_parser(sub) -> None:
    from .merge import METHODS

    p = sub.add_parser("merge", help="merge a multimodal checkpoint with its language-only twin")
    p.add_argument("--mm", help="multimodal checkpoint directory (required unless --config)")
    p.add_argument(
        "--lang", help="language-only checkpoint directory (same class or LlamaForCausalLM; required unless --config)"
    )
    p.add_argument(
        "--config",
        metavar="RECIPE.yml",
        help="a mergekit YAML recipe (two models + optional base) instead of --mm/--lang/--method/--alpha/--base",
    )
    p.add_argument("--out", help="output checkpoint directory (written atomically)")
    p.add_argument("--method", default="linear", choices=sorted(METHODS))
    add_alpha_arguments(p)
    p.add_argument("--base", help="shared base checkpoint for task-vector methods (default: the multimodal model)")
    p.add_argument("--dtype", help="output dtype: float32, bfloat16 or float16 (default: the multimodal model's)")
    p.add_argument("--max-shard-size", default="2GB")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is an earlier babymerge merge output")
    p.add_argument(
        "--overwrite-any", action="store_true",
        help="replace --out whatever directory it is (never an input: --out may not be, contain or lie inside one)",
    )  # fmt: skip
    p.add_argument("--force-tokenizer", action="store_true", help="merge even if the tokenizers differ")
    p.add_argument("--mergekit-yaml", metavar="FILE", help="write the recipe as a mergekit YAML config")
    p.add_argument("--no-progress", action="store_true")
    add_method_options(p)


def add_alpha_arguments(p: argparse.ArgumentParser) -> None:
    """``--alpha``, ``--alpha-gradient`` and ``--module-alpha`` (read with ``alpha_from_args``)."""
    p.add_argument(
        "--alpha", metavar="ALPHA",
        help="weight of the LANGUAGE-ONLY model in [0, 1] (0 = multimodal unchanged), one number (default 0.3)",
    )  # fmt: skip
    p.add_argument(
        "--alpha-gradient", metavar="FIRST,...,LAST",
        help="alpha as a gradient over the decoder layers, e.g. '0,0.5': 0 at the first layer, 0.5 at the last",
    )  # fmt: skip
    p.add_argument(
        "--module-alpha", action="append", default=[], metavar="PATTERN=ALPHA",
        help="per-module alpha, e.g. 'model.embed_tokens.*=0.5' (repeatable; first match wins, --alpha is the default)",
    )  # fmt: skip


def add_method_options(p: argparse.ArgumentParser) -> None:
    """One flag per merge-method option (``--density``...), kept as text: the registry types
    them (``MergeMethod.parse_options``); read them with ``method_options``."""
    from .merge import METHODS

    group = p.add_argument_group("method options (see `babymerge methods`)")
    for name in sorted({name for m in METHODS.values() for name in m.options}):
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"opt_{name}", default=None)


def method_options(args) -> dict[str, str]:
    """The method options given on the command line, as text."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}


def alpha_from_args(args):
    """The alpha of ``--alpha`` (one number), ``--alpha-gradient`` (a list) and ``--module-alpha``.
    ``--alpha 0,0.5`` is refused: it reads like the sweep's ``--alphas 0,0.5`` (two alphas)."""
    from .merge import parse_alpha

    if args.alpha is not None and args.alpha_gradient is not None:
        raise BabyMergeError("give --alpha (one number) or --alpha-gradient (one per layer span), not both")
    if args.alpha is not None:
        alpha = parse_alpha(args.alpha)
        if not isinstance(alpha, float):
            raise BabyMergeError(
                f"--alpha takes one number, got {args.alpha!r}; for a gradient over the decoder layers use "
                f"--alpha-gradient {args.alpha}, and to evaluate several alphas `babymerge sweep --alphas {args.alpha}`"
            )
    elif args.alpha_gradient is not None:
        alpha = parse_alpha(args.alpha_gradient)
        if isinstance(alpha, float):
            raise BabyMergeError(
                f"--alpha-gradient takes two or more numbers (first layer, ..., last layer), got {args.alpha_gradient!r}; "
                "for one alpha everywhere use --alpha"
            )
    else:
        alpha = 0.3
    if not args.module_alpha:
        return alpha
    spec = {}
    for item in args.module_alpha:
        pattern, sep, value = item.partition("=")
        if not sep or not pattern:
            raise BabyMergeError(f"--module-alpha takes PATTERN=ALPHA, got {item!r}")
        spec[pattern] = parse_alpha(value)
    spec["*"] = alpha
    return spec


def _run_merge(args) -> int:
    from .merge import merge
    from .merge.mergekit import check_recipe_alone, read_mergekit_config, write_mergekit_yaml

    if args.out is None and args.mergekit_yaml is None:
        raise BabyMergeError("nothing to do: give --out (merged checkpoint) and/or --mergekit-yaml (recipe)")
    options = method_options(args)
    if args.config:
        beside = {"--mm": args.mm, "--lang": args.lang, "--base": args.base, "--alpha": args.alpha,
                  "--alpha-gradient": args.alpha_gradient, "--module-alpha": args.module_alpha,
                  **{f"--{name.replace('_', '-')}": value for name, value in options.items()}}  # fmt: skip
        check_recipe_alone("--config", beside)
        recipe = read_mergekit_config(args.config)
        args.mm, args.lang, args.method, args.base = recipe.mm, recipe.lang, recipe.method, recipe.base
        alpha, options = recipe.alpha, recipe.options
        args.dtype = args.dtype or recipe.dtype
    elif not (args.mm and args.lang):
        raise BabyMergeError("give --mm and --lang (the two checkpoints), or --config with a mergekit recipe")
    else:
        alpha = alpha_from_args(args)
    if args.mergekit_yaml:
        write_mergekit_yaml(
            args.mergekit_yaml, args.mm, args.lang, args.method, alpha, base_ckpt=args.base, dtype=args.dtype, **options
        )
        print(f"wrote mergekit recipe {args.mergekit_yaml}")
    if args.out:
        report = merge(
            args.mm, args.lang, args.method, alpha, base_ckpt=args.base, out=args.out, dtype=args.dtype,
            max_shard_size=args.max_shard_size, overwrite="any" if args.overwrite_any else args.overwrite,
            allow_different_tokenizers=args.force_tokenizer, progress=not args.no_progress, **options,
        )  # fmt: skip
        print(report.summary())
    return 0


def _add_sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="evaluate merges over checkpoints x alphas, with plots")
    p.add_argument("--mm", required=True, help="multimodal run directory (checkpoint subdirectories) or one checkpoint")
    p.add_argument("--lang", required=True, help="language-only run directory or one checkpoint")
    p.add_argument("--alphas", default="0:1:0.1", help="'0,0.3,1' or a range 'start:stop:step' (default 0:1:0.1)")
    p.add_argument(
        "--checkpoints", default="all",
        help="all, latest, words (the chck_<N>M word-count checkpoints), or names (in both runs), comma-separated",
    )  # fmt: skip
    p.add_argument("--tasks", required=True, help="lm-eval tasks or groups, comma-separated")
    p.add_argument("--include-path", help="task YAML folder(s), ':'-separated (default: the project's lm_eval_tasks)")
    p.add_argument("--allow-hub-tasks", action="store_true", help="also run lm-eval's own tasks (may download data)")
    p.add_argument("--out", required=True, help="sweep directory (resumable; refuses settings other than its own)")
    p.add_argument("--limit", type=float, help="examples per task (for quick looks)")
    p.add_argument("--model-args", default="", help="extra babymerge model_args, e.g. dtype=bfloat16,device=cuda")
    p.add_argument(
        "--shard", metavar="K/N",
        help="this process is shard K (0..N-1) of N sweeping into the same --out (default under a Slurm array: "
        "SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT); torchrun/accelerate ranks split each shard further",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="lm-eval logs at DEBUG (e.g. our tasks over its own)")


def _run_sweep(args) -> int:
    from lm_eval.utils import setup_logging, simple_parse_args_string

    from .sweep import parse_alphas, sweep

    bad = [kv for kv in args.model_args.split(",") if kv.strip() and "=" not in kv]
    if bad:
        raise BabyMergeError(
            f"--model-args takes KEY=VALUE pairs separated by commas, e.g. dtype=bfloat16,device=cuda; got {bad[0]!r}"
        )
    if args.limit is not None and not args.limit > 0:
        raise BabyMergeError(
            f"--limit must be a positive number of examples (or a fraction below 1), got {args.limit:g}"
        )
    limit = int(args.limit) if args.limit and args.limit >= 1 else args.limit
    if args.verbose:
        setup_logging(logging.DEBUG)
    default_show = warnings.showwarning

    def show(message, category, filename, *rest, **kwargs):  # our own warnings as one line, without source code
        if Path(filename).parent.name == "babymerge":
            print(f"babymerge: warning: {message}", file=sys.stderr)
        else:
            default_show(message, category, filename, *rest, **kwargs)

    with warnings.catch_warnings():
        warnings.showwarning = show
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        cells = sweep(
            args.mm, args.lang, parse_alphas(args.alphas), tasks, args.out, checkpoints=args.checkpoints,
            include_path=args.include_path, limit=limit, allow_hub_tasks=args.allow_hub_tasks,
            model_args=simple_parse_args_string(args.model_args), shard=args.shard, progress=not args.no_progress,
        )  # fmt: skip
    plots = "score_vs_alpha.png (tradeoff.png, score_vs_words.png)"
    print(f"{len(cells)} cells in {args.out}: results.csv, results.jsonl, {plots}")
    return 0


def _add_submit_parser(sub) -> None:
    from .babylm.submit import add_parser

    add_parser(sub)


def _run_submit(args) -> int:
    from .babylm.submit import run

    return run(args)


def _add_devbench_parser(sub) -> None:
    from .babylm.devbench import add_parser

    add_parser(sub)


def _run_devbench(args) -> int:
    from .babylm.devbench import run_cli

    return run_cli(args)


def _run_aoa(args) -> int:
    from .babylm.aoa import run_command

    return run_command(args)


def _run_methods(args) -> int:
    from .merge import METHODS
    from .merge.registry import methods_markdown

    if args.markdown:
        print(methods_markdown(), end="")
        return 0
    for name, method in sorted(METHODS.items()):
        opts = ", ".join(f"{k}={v}" for k, v in method.options.items()) or "no options"
        base = " [uses --base]" if method.uses_base else ""
        print(f"{name}{base}: {method.doc.splitlines()[0]}\n    options: {opts}")
    return 0


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (it may be replaced meanwhile)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _FlagsFormatter(logging.Formatter):
    """One line per warning, with the command's flags for the library's argument names."""

    def __init__(self, flags: dict[str, str]):
        super().__init__("babymerge: warning: %(message)s")
        self.flags = flags

    def format(self, record: logging.LogRecord) -> str:
        return in_flags(super().format(record), self.flags)


def _show_warnings(flags: dict[str, str]) -> None:
    """Our warnings (e.g. a checkpoint without tokenizer files) as one line each on stderr."""
    log = logging.getLogger("babymerge")
    handler = next((h for h in log.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setLevel(logging.WARNING)
        log.addHandler(handler)
        log.propagate = False
    handler.setFormatter(_FlagsFormatter(flags))  # this command's flags (main may run several in one process)


def _run_tasks_path(args) -> int:
    from .tasks import tasks_path

    print(tasks_path())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="babymerge", description="Merge BabyLM multimodal models with their language-only twins."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_merge_parser(sub)
    methods = sub.add_parser("methods", help="list merge methods and their options")
    methods.add_argument("--markdown", action="store_true", help="as the Markdown table of docs/merging.md")
    _add_sweep_parser(sub)
    _add_submit_parser(sub)
    _add_devbench_parser(sub)
    from .babylm.aoa import add_parsers as _add_aoa_parsers

    _add_aoa_parsers(sub)
    sub.add_parser("tasks-path", help="print the folder of this project's lm-eval tasks (for lm_eval --include_path)")
    args = parser.parse_args(argv)
    _show_warnings(_FLAGS.get(args.command, _OUT_FLAGS))
    commands = {
        "merge": _run_merge,
        "methods": _run_methods,
        "sweep": _run_sweep,
        "submit": _run_submit,
        "devbench": _run_devbench,
        "aoa": _run_aoa,
        "aoa-score": _run_aoa,
        "tasks-path": _run_tasks_path,
    }
    try:
        return commands[args.command](args)
    except BabyMergeError as err:
        print(f"babymerge: error: {in_flags(str(err), _FLAGS.get(args.command, _OUT_FLAGS))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
