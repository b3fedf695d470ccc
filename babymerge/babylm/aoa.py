"""Age of acquisition (AoA): each target word's surprisal in its contexts, at every word-count checkpoint.

    babymerge aoa --mm runs/mm --lang runs/lang --alpha 0.3 \\
        --data evaluation_data/full_eval/aoa/cdi_childes.json --out aoa/ \\
        [--cdi evaluation_data/full_eval/aoa/cdi_human.csv]

For every ``chck_<N>M`` checkpoint pair of the two runs (``babymerge.sweep.checkpoint_pairs``),
the pair is merged at ``alpha`` when it is loaded (``--model babymerge``'s ``lang_ckpt=...,alpha=...``)
and each (word, context) of ``cdi_childes.json`` (``{word: [{"context": ...}, ...]}``) is scored as
the 2025 pipeline's ``AoA_word`` extractor scores it (``StepSurprisalExtractor``, ``causal`` backend):

* the words are the file's keys longer than one character (as written, before stripping) with at
  least ``min_context`` contexts (``load_eval``; ``run.py``'s default 0, which ``eval_aoa.sh`` keeps),
  in file order, each with all its contexts in order;
* the text is ``context.strip() + " " + word.strip()``, tokenised whole by the checkpoint's
  ``AutoProcessor`` (for BabyLLaVA ``"<image> " + text``, the image token filled by the black image);
  the word's tokens are those whose end offset lies past the word's first character; the first
  token is never predicted; surprisal = minus the sum of their log-probabilities (natural log).

That is the rule the adapter applies to a loglikelihood request ``(context + " ", word,
{SCORING_KEY: "causal"})`` (``babylm.scoring.pipeline_tokens``, start = ``len(context) +`` the first
token's start offset, 0 whenever the first token is BOS or ``<image>``, or the context is not empty),
so the surprisals come from the adapter's public ``loglikelihood``: prefix sharing, batching, the
merge at load time, all as in every other task.

Where the pipeline writes NaN (it catches every exception of one row): a text of one token (an empty
context, a text-only model without BOS, a one-token word: nothing to feed the model) is NaN here too.
Any other model error in a forward pass (e.g. a text longer than a learned position table) stops this
command instead, naming the cause; a checkpoint that does not load stops it too, where
the pipeline skips the checkpoint and ``collate_preds`` then refuses the file. A word none of whose
tokens is predicted (the tokenizer merged it into the first token) gets 0, as in the pipeline.

Output in ``--out``: ``surprisal.json`` in the pipeline's form (``{"metadata": {...}, "results":
[{"step", "word_count", "target_word", "context_id", "context", "surprisal"}, ...]}``, checkpoint by
checkpoint, then word, then context), which ``collate_preds`` embeds as the submission's ``aoa`` part
and ``babymerge submit --format 2025 --aoa`` reads; ``steps/<chck>.json``, each checkpoint's rows as it
finishes (a rerun skips checkpoints done with the same settings and weights); ``aoa.json``, the settings.
With ``--cdi``, also the organisers' score and plots (``babylm.aoa_score``).

The pipeline itself loads each checkpoint as ``from_pretrained(model, revision="chck_<N>M")``; for a
local folder transformers ignores ``revision``, so run on a local run it scores one model 28 times.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import BabyMergeError
from ..publish import output_errors, write_file_atomic
from .checkpoints import checkpoint_words, fast_revisions, word_checkpoint_name
from .scoring import SCORING_KEY

# Where the pipeline keeps the data, under its evaluation_data/ folder (from OSF, not in its repository):
DATA_FILE = "full_eval/aoa/cdi_childes.json"  # eval_aoa.sh's default word path
CDI_FILE = "full_eval/aoa/cdi_human.csv"  # calculate_results_from_pred.py's CDI ages
SURPRISAL_FILE = "surprisal.json"
SETTINGS_FILE = "aoa.json"
STEPS_DIR = "steps"


# -- the data ---------------------------------------------------------------------------------------------------------
def read_words(path, min_context: int = 0) -> list[tuple[str, list[str]]]:
    """``[(word, [context, ...]), ...]`` of a ``cdi_childes.json`` file, filtered as the pipeline's
    ``load_eval`` filters it: words longer than one character with at least ``min_context`` contexts."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BabyMergeError(
            f"--data {path}: no such file; get cdi_childes.json from the BabyLM OSF data (https://osf.io/ryjfm/, "
            f"evaluation_data/{DATA_FILE})"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BabyMergeError(f"--data {path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise BabyMergeError(
            f'--data {path}: must hold {{word: [{{"context": ...}}, ...]}}, got a {type(data).__name__}'
        )
    words = []
    for word, entries in data.items():
        if len(word) <= 1:
            continue
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "context" in e for e in entries):
            raise BabyMergeError(f'--data {path}: {word!r} must map to a list of {{"context": "..."}} objects')
        if len(entries) >= min_context:
            words.append((word, [str(e["context"]) for e in entries]))
    if not words:
        raise BabyMergeError(f"--data {path}: no word of more than one character with {min_context}+ contexts")
    return words


def data_digest(words: list[tuple[str, list[str]]]) -> str:
    return hashlib.sha256(json.dumps(words).encode()).hexdigest()[:16]


# -- scoring ----------------------------------------------------------------------------------------------------------
def surprisals(lm, words: list[tuple[str, list[str]]], progress: bool = False) -> list[float]:
    """Surprisal of each (word, context) in order, with ``lm`` (a ``BabyMergeLM``): requests scored the
    2025 pipeline's way (``SCORING_KEY``), the text split where the pipeline's AoA extractor splits it."""
    from lm_eval.api.instance import Instance

    texts = [(context.strip() + " ", word.strip()) for word, contexts in words for context in contexts]
    requests = [Instance("loglikelihood", {}, (*text, {SCORING_KEY: "causal"}), i) for i, text in enumerate(texts)]
    values = [-loglikelihood for loglikelihood, _ in lm.loglikelihood(requests, disable_tqdm=not progress)]
    # A text of one token leaves the pipeline nothing to feed (tokens[:-1] is empty): the model raises and
    # the pipeline writes NaN. Only an empty context can give one: "<image>" or BOS, then the word, give two.
    for i, (context, word) in enumerate(texts):
        if context == " " and not lm.is_multimodal and len(lm.tokenizer(context + word)["input_ids"]) < 2:
            values[i] = math.nan
    return values


def step_rows(step: str, words: list[tuple[str, list[str]]], values: list[float]) -> list[dict]:
    """The pipeline's result rows of one checkpoint (``analyze_steps``)."""
    pairs = [(w, i, c) for w, contexts in words for i, c in enumerate(contexts)]
    return [
        {"step": step, "word_count": checkpoint_words(step), "target_word": w, "context_id": i, "context": c,
         "surprisal": float(s)}
        for (w, i, c), s in zip(pairs, values, strict=True)
    ]  # fmt: skip


def surprisal_file(rows: list[dict], model_name: str) -> dict:
    """``surprisal.json`` as the pipeline writes it (``run.py``, ``analyze_steps`` without resume)."""
    steps = len({r["step"] for r in rows})
    meta = {"model_name": model_name, "use_bos_only": False, "total_steps": steps, "completed_steps": steps}
    return {"metadata": meta, "results": rows}


# -- the command ------------------------------------------------------------------------------------------------------
def _settings(mm_run, lang_run, alpha, words, data, min_context, model_args, model_name) -> dict:
    from .. import __version__

    return {
        "mm_run": str(Path(mm_run).resolve()), "lang_run": str(Path(lang_run).resolve()), "alpha": alpha,
        "data": str(Path(data).resolve()), "data_sha256": data_digest(words), "min_context": min_context,
        "model_args": dict(sorted(model_args.items())), "model_name": model_name, "babymerge_version": __version__,
    }  # fmt: skip


def _check_out(out: Path, settings: dict) -> None:
    """An ``out`` we did not write is refused; one written with other settings too (no mixing)."""
    if out.exists() and not out.is_dir():
        raise BabyMergeError(f"`out` {out} is a file; give a folder for the AoA outputs")
    path = out / SETTINGS_FILE
    if not path.is_file():
        if (out / SURPRISAL_FILE).exists() or (out / STEPS_DIR).exists():
            raise BabyMergeError(
                f"--out {out} holds a {SURPRISAL_FILE} or {STEPS_DIR}/ that babymerge aoa did not write; choose another `out`"
            )
        return
    before = json.loads(path.read_text())
    differ = [k for k in settings if k != "babymerge_version" and before.get(k) != settings[k]]
    if differ:
        raise BabyMergeError(
            f"`out` {out} was written with other settings ({differ[0]}: {before.get(differ[0])!r}, now "
            f"{settings[differ[0]]!r}); choose another `out`"
        )


def run(
    mm_run,
    lang_run,
    alpha: float,
    data,
    out,
    *,
    checkpoints: str = "words",
    model_args: dict | None = None,
    min_context: int = 0,
    model_name: str | None = None,
    progress: bool = True,
) -> Path:
    """Score every word-count checkpoint pair not done yet; write ``surprisal.json``; return its path."""
    from ..lm_eval_model import BabyMergeLM
    from ..sweep import check_model_args, checkpoint_fingerprint, checkpoint_pairs

    model_args = check_model_args(model_args)
    words = read_words(data, min_context)
    pairs = checkpoint_pairs(mm_run, lang_run, checkpoints)
    unnamed = [name for name, m, _ in pairs if checkpoint_words(m.name) is None]
    if unnamed:
        raise BabyMergeError(
            f"AoA needs word-count checkpoints (chck_<N>M, the words seen): {unnamed[0]!r} is not one; "
            "give --checkpoints words or chck_ names"
        )
    model_name = model_name or Path(mm_run).resolve().name
    settings = _settings(mm_run, lang_run, alpha, words, data, min_context, model_args, model_name)
    out = Path(out)
    _check_out(out, settings)
    with output_errors(out):
        write_file_atomic(out / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")
    rows = []
    bar = tqdm(pairs, desc="AoA checkpoints", unit="ckpt", disable=not progress)
    for _, mm_ckpt, lang_ckpt in bar:
        step = word_checkpoint_name(checkpoint_words(mm_ckpt.name))
        fingerprints = {"mm": checkpoint_fingerprint(mm_ckpt), "lang": checkpoint_fingerprint(lang_ckpt)}
        path = out / STEPS_DIR / f"{step}.json"
        done = json.loads(path.read_text()) if path.is_file() else {}
        if done.get("fingerprints") != fingerprints:
            bar.set_postfix_str(step)
            lm = BabyMergeLM(pretrained=str(mm_ckpt), lang_ckpt=str(lang_ckpt), alpha=alpha, **model_args)
            done = {"fingerprints": fingerprints, "results": step_rows(step, words, surprisals(lm, words, progress))}
            del lm
            with output_errors(out):
                write_file_atomic(path, json.dumps(done))
        rows += done["results"]
    bar.close()
    with output_errors(out):
        return write_file_atomic(out / SURPRISAL_FILE, json.dumps(surprisal_file(rows, model_name), indent=2))


def read_surprisal(path, track: str | None = None, rows_per_checkpoint: int | None = None) -> dict:
    """A ``surprisal.json`` (ours, or the pipeline's), or the folder that holds it. With ``track``, checked
    as ``collate_preds`` checks it: rows for exactly the track's checkpoints, ``rows_per_checkpoint`` each."""
    path = Path(path)
    path = path / SURPRISAL_FILE if path.is_dir() else path
    try:
        data = json.loads(path.read_text())
        steps = [r["step"] for r in data["results"]]
    except FileNotFoundError:
        raise BabyMergeError(
            f"{path}: no such file; write it with babymerge aoa (or the pipeline's eval_aoa.sh)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BabyMergeError(f"{path}: not an AoA surprisal file ({type(err).__name__}: {err})") from None
    if track is not None:
        wanted = fast_revisions(track)
        if set(steps) != set(wanted) or any(steps.count(c) != rows_per_checkpoint for c in wanted):
            raise BabyMergeError(
                f"{path}: AoA needs {rows_per_checkpoint} surprisals for each of the {len(wanted)} "
                f"checkpoints {wanted[0]}..{wanted[-1]}"
            )
    return data


# -- command line -----------------------------------------------------------------------------------------------------
def add_parsers(sub) -> None:
    p = sub.add_parser("aoa", help="age of acquisition: word surprisals at every word-count checkpoint pair")
    p.add_argument("--mm", required=True, help="multimodal run directory (chck_<N>M checkpoints)")
    p.add_argument("--lang", required=True, help="language-only run directory (chck_<N>M checkpoints)")
    p.add_argument("--alpha", type=float, default=0.3, help="weight of the LANGUAGE-ONLY model (default 0.3)")
    p.add_argument("--data", help=f"cdi_childes.json (default $BABYMERGE_DATA/{DATA_FILE})")
    p.add_argument("--out", required=True, help="folder for surprisal.json (resumable; refuses other settings)")
    p.add_argument(
        "--cdi", help=f"cdi_human.csv: also compute the AoA score and plot curves ($BABYMERGE_DATA/{CDI_FILE})"
    )
    p.add_argument(
        "--checkpoints", default="words", help="words (every chck_<N>M pair, default) or names, comma-separated"
    )
    p.add_argument("--min-context", type=int, default=0, help="drop words with fewer contexts (pipeline default 0)")
    p.add_argument("--model-name", help="metadata.model_name of surprisal.json (default: the --mm folder's name)")
    p.add_argument("--model-args", default="", help="extra babymerge model_args, e.g. dtype=bfloat16,device=cuda")
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("aoa-score", help="the organisers' AoA score of a surprisal.json, with learning-curve plots")
    p.add_argument("surprisal", help="surprisal.json (babymerge aoa's, or the pipeline's), or its folder")
    p.add_argument("--cdi", help=f"cdi_human.csv (default $BABYMERGE_DATA/{CDI_FILE})")
    p.add_argument("--out", help="folder for aoa_score.json and learning_curves.png (default: beside the file)")


def _default(path, relative: str, flag: str) -> Path:
    from ..data import evaluation_data_dir

    if path is not None:
        return Path(path)
    found = evaluation_data_dir() / relative
    if not found.is_file():
        raise BabyMergeError(
            f"{flag}: {found} does not exist; give {flag} or set BABYMERGE_DATA to the evaluation data"
        )
    return found


def _report(surprisal_path: Path, cdi, out: Path) -> None:
    from .aoa_score import write_score

    score = write_score(read_surprisal(surprisal_path), cdi, out)
    print(
        f"AoA score (Pearson r of model vs children's ages of acquisition): {score['curve_fitness']:.3f} "
        f"over {score['n_words']} words; wrote {out / 'aoa_score.json'}, {out / 'learning_curves.png'}"
    )


def run_command(args) -> int:
    if args.command == "aoa-score":
        path = Path(args.surprisal)
        out = Path(args.out) if args.out else (path if path.is_dir() else path.parent)
        _report(path, _default(args.cdi, CDI_FILE, "--cdi"), out)
        return 0
    from lm_eval.utils import simple_parse_args_string

    bad = [kv for kv in args.model_args.split(",") if kv.strip() and "=" not in kv]
    if bad:
        raise BabyMergeError(f"--model-args takes KEY=VALUE pairs separated by commas; got {bad[0]!r}")
    if not 0 <= args.alpha <= 1:
        raise BabyMergeError(f"--alpha must lie in [0, 1] (weight of the language-only model), got {args.alpha:g}")
    cdi = Path(args.cdi) if args.cdi else None
    if cdi is not None and not cdi.is_file():
        raise BabyMergeError(f"--cdi {cdi}: no such file (cdi_human.csv, evaluation_data/{CDI_FILE} from OSF)")
    path = run(
        args.mm, args.lang, args.alpha, _default(args.data, DATA_FILE, "--data"), args.out,
        checkpoints=args.checkpoints, model_args=simple_parse_args_string(args.model_args),
        min_context=args.min_context, model_name=args.model_name, progress=not args.no_progress,
    )  # fmt: skip
    print(f"wrote {path}")
    if cdi is not None:
        _report(path, cdi, Path(args.out))
    return 0
