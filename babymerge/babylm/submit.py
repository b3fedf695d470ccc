"""``babymerge submit``: a BabyLM leaderboard file from lm-eval ``--log_samples`` output, either format.

    babymerge submit --results results/ --model NAME --out submission/ [--data DIR] [--vision] [--allow-partial]
    babymerge submit --format 2025 --results results/main --model NAME --out submission/ \\
        [--fast-results results/fast] [--pipeline-results DIR] [--glue-results DIR] [--devbench DIR] [--aoa DIR] \\
        [--backend causal] [--track multimodal] [--sizes JSON]

``--format 2024`` (the default): ``submission2024``; ``--format 2025``: ``submission2025``. An
option of the other format is refused rather than ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import BabyMergeError

FORMATS = ("2024", "2025")
# options of one format only (argparse dest -> its flag), default None so that giving one is seen
ONLY = {
    "2024": {"data": "--data", "vision": "--vision"},
    "2025": {
        "fast_results": "--fast-results",
        "pipeline_results": "--pipeline-results",
        "glue_results": "--glue-results",
        "devbench": "--devbench",
        "backend": "--backend",
        "track": "--track",
        "sizes": "--sizes",
        "aoa": "--aoa",
    },
}


def add_parser(sub) -> None:
    from .sizes import TRACKS

    p = sub.add_parser("submit", help="BabyLM leaderboard prediction file from lm-eval --log_samples output")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="2024",
        help="2024: NAME_*_predictions.json.gz (default); 2025: all_full_preds_and_fast_scores_<backend>.json",
    )
    p.add_argument("--results", required=True, help="lm-eval --output_path folder with samples_*.jsonl")
    p.add_argument("--model", required=True, help="model name (no path): the evaluated checkpoint's folder name")
    p.add_argument("--out", required=True, help="folder to write the submission file(s) in")
    p.add_argument("--allow-partial", action="store_true", help="write even if required parts are missing (listed)")
    group = p.add_argument_group("--format 2024")
    group.add_argument(
        "--data", help="evaluation data folder to check counts against (default $BABYMERGE_DATA or ./evaluation_data)"
    )
    group.add_argument("--vision", action="store_true", default=None, help="include the vision tasks (withvision file)")
    group = p.add_argument_group("--format 2025")
    group.add_argument(
        "--fast-results",
        metavar="DIR",
        help="folder with one lm-eval output folder per checkpoint, named chck_1M ... chck_1000M (fast tasks)",
    )
    group.add_argument(
        "--pipeline-results",
        metavar="DIR",
        help="the pipeline's results/<model>/main folder: GLUE (finetune/), AoA and DevBench taken from it",
    )
    group.add_argument(
        "--glue-results",
        metavar="DIR",
        help="results/<model>/main of `python -m train.finetune --out results`: GLUE taken from its finetune/",
    )
    group.add_argument(
        "--devbench",
        metavar="DIR",
        help="the --out folder of `babymerge devbench` (its zero_shot/devbench/*.npy): the DevBench part",
    )
    group.add_argument("--aoa", metavar="DIR", help="babymerge aoa's --out folder (or a surprisal.json): the AoA part")
    group.add_argument("--backend", help="backend name in the file name (default causal)")
    group.add_argument("--track", choices=TRACKS, help="sets the checkpoints and vision tasks (default multimodal)")
    group.add_argument(
        "--sizes",
        metavar="JSON",
        help='replace the official counts, for small fixtures: {"full": {...}, "fast": {...}}',
    )


def _read_sizes(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        sizes = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BabyMergeError(
            f"--sizes {path}: not a readable JSON file ({err}); give the counts file, or leave --sizes out "
            "for the official counts"
        ) from None
    if not isinstance(sizes, dict):
        raise BabyMergeError(f'--sizes {path}: must hold an object, e.g. {{"full": {{...}}, "fast": {{...}}}}')
    return sizes


def run(args) -> int:
    for other, options in ONLY.items():
        given = [flag for dest, flag in options.items() if getattr(args, dest) is not None]
        if other != args.format and given:
            raise BabyMergeError(f"{given[0]} is an option of --format {other}, not of --format {args.format}")
    if args.format == "2025":
        from .submission2025 import submit

        path, missing = submit(
            args.results,
            args.model,
            args.out,
            args.fast_results,
            pipeline_results=args.pipeline_results,
            glue_results=args.glue_results,
            devbench_results=args.devbench,
            backend=args.backend or "causal",
            track=args.track or "multimodal",
            sizes=_read_sizes(args.sizes),
            allow_partial=args.allow_partial,
            aoa=args.aoa,
        )
        if missing:
            print(f"partial submission: {len(missing)} parts missing: {', '.join(missing)}")
        print(f"wrote {path}")
        return 0
    from .submission2024 import submit

    paths = submit(
        args.results,
        args.model,
        args.out,
        data_dir=args.data,
        vision=bool(args.vision),
        allow_partial=args.allow_partial,
    )
    summary = json.loads(paths["summary"].read_text())
    if summary["missing"]:
        print(f"partial submission: {len(summary['missing'])} required subtasks missing, e.g. {summary['missing'][:5]}")
    print(f"wrote {paths['predictions']}\nwrote {paths['summary']}")
    return 0
