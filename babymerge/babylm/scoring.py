"""How a candidate is chosen and counted, the same in every task and in both submission files.

An item offers candidates, the right one first (as the pipelines order them), each scored by
its summed log-probability. Every choice task (``blimp*``, ``babylm2025_*``, the VQA task,
``winoground_filtered``) reports the same three metrics, ``choice_metrics``:

  acc           the right candidate strictly above every other (``is_right``): a tie counts as
                WRONG, our convention (a model that scores the candidates equal has not chosen)
  acc_pipeline  the BabyLM pipelines' argmax (``choose``): a tie picks the first candidate, the
                right one, so it counts as right; the number the leaderboard reports
  ties          the right candidate tied with the best other one (``acc_pipeline - acc``)

Winoground's text/image/group scores apply ``is_right`` to each of their comparisons. The
submission files write the pipeline's choice, ``choose``.

The 2025 pipeline's ``causal`` backend also decides which tokens of a candidate count
(``pipeline_tokens``); a loglikelihood request whose extra argument dict has ``SCORING_KEY`` is
scored that way by ``--model babymerge`` (``babymerge.lm_eval_model``).
"""

from __future__ import annotations

import torch

from ..errors import BabyMergeError

METRICS = ("acc", "acc_pipeline", "ties")
# Extra-argument key of a loglikelihood request scored the pipeline's way (see pipeline_tokens).
SCORING_KEY = "babylm2025_scoring"


def is_right(loglikelihoods) -> bool:
    """Our rule: the first (right) candidate scores strictly above every other; a tie is wrong."""
    right, *others = loglikelihoods
    return right > max(others)


def choose(loglikelihoods) -> int:
    """The pipelines' prediction: the candidate of highest summed log-probability, the first
    one on a tie (``torch.max``'s and ``numpy.argmax``'s rule)."""
    scores = list(loglikelihoods)
    return scores.index(max(scores))


def choice_metrics(loglikelihoods) -> dict[str, float]:
    """``acc``, ``acc_pipeline`` and ``ties`` of one item, the right candidate first."""
    scores = list(loglikelihoods)
    acc, acc_pipeline = is_right(scores), choose(scores) == 0
    return {"acc": float(acc), "acc_pipeline": float(acc_pipeline), "ties": float(acc_pipeline and not acc)}


def first_probability(loglikelihoods) -> float:
    """The wug tasks' model ratio: softmax over the candidates' log-likelihoods, the first one's
    share, in float32 as the pipeline computes it (``rank_and_evaluate_wug``). Far-apart
    candidates give exactly 1.0 or 0.0 there, and those ties change Spearman's rho."""
    return float(torch.tensor(list(loglikelihoods), dtype=torch.float32).softmax(0)[0])


def pipeline_prediction(doc: dict, loglikelihoods) -> dict:
    """What the 2025 pipeline writes for one item (without its ``id``): ``pred``, the chosen
    candidate's text as the pipeline reports it (``doc["preds"]``: the completion, or the whole
    sentence for COMPS), and for the wug tasks ``prob``."""
    prediction = {"pred": doc["preds"][choose(loglikelihoods)]}
    if "ratio" in doc:
        prediction["prob"] = first_probability(loglikelihoods)
    return prediction


def pipeline_tokens(tokenizer, context: str, continuation: str) -> tuple[list[int], int]:
    """The tokens of one candidate and how many at their end the 2025 pipeline scores.

    The pipeline's ``causal`` backend (``sentence_zero_shot/dataset.py``) tokenises the whole
    candidate sentence, here ``context + continuation``, with the tokenizer's default special
    tokens, feeds ``tokens[:-1]`` and predicts ``tokens[1:]``: the first token is never scored.
    A later token is scored when its character span ends after the completion's start,
    ``len(context)`` plus the first token's start offset, as the pipeline computes it. So
    whitespace and BOS are whatever the tokenizer makes of the full text, unlike lm-eval's
    ``(context, continuation)`` split, and a token straddling the boundary counts.

    Returns ``(tokens up to the last scored one, number of scored tokens)``; nothing after the
    last scored token (e.g. an EOS the tokenizer appends) affects the score. Needs a fast
    tokenizer (offsets).
    """
    text = context + continuation
    encoding = tokenizer(text=text, return_offsets_mapping=True)  # a processor too, called as the pipeline calls it
    ids, offsets = list(encoding["input_ids"]), encoding["offset_mapping"]
    if not ids:
        raise BabyMergeError(f"the tokenizer gives no tokens for {text!r}")
    start = len(context) + offsets[0][0]
    scored = [i for i in range(1, len(ids)) if offsets[i][1] > start]
    if not scored:
        return ids, 0
    if scored != list(range(scored[0], scored[-1] + 1)):
        raise BabyMergeError(
            f"the scored tokens of {text!r} are not contiguous (offsets {offsets}); unsupported tokenizer"
        )
    return ids[: scored[-1] + 1], len(scored)
