"""Planning a merge from the safetensors headers alone: which tensors are merged, with which
alpha, and which are kept from the multimodal model.

Every shape, vocabulary, alpha and role problem is reported here, before anything is read,
computed or written.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import torch

from ..checkpoint import Checkpoint
from ..errors import BabyMergeError
from .alpha import AlphaSchedule

logger = logging.getLogger(__name__)

# Multimodal tensors never interpolated even when the twin has them: the black-image feature
# is an output of the frozen encoder, not a learned weight.
KEEP_FROM_MULTIMODAL = ("black_image_features",)


def is_mergeable(key: str, dtype: torch.dtype) -> bool:
    """Whether a multimodal tensor is interpolated when the twin has it too: floating-point
    weights, except those kept from the multimodal model (``KEEP_FROM_MULTIMODAL``). The merge
    and both mergekit translations (babymerge.merge.mergekit) ask this one question."""
    return dtype.is_floating_point and not key.endswith(KEEP_FROM_MULTIMODAL)


@dataclass
class Entry:
    """One output tensor: where it comes from and how it is made."""

    key: str  # name in the multimodal checkpoint (and in the output)
    text_key: str  # LlamaForCausalLM name, what alpha patterns match
    dtype: torch.dtype  # output dtype
    shape: tuple[int, ...]
    lang_key: str | None = None  # None: kept from the multimodal model
    base_key: str | None = None
    alpha: float | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def make_plan(
    mm: Checkpoint, lang: Checkpoint, base: Checkpoint | None, schedule: AlphaSchedule, out_dtype
) -> list[Entry]:
    """One ``Entry`` per multimodal tensor, in the multimodal checkpoint's order."""
    lang_names = {lang.text_key(k): k for k in lang.tensors}
    base_names = {base.text_key(k): k for k in base.tensors} if base else {}
    plan = []
    for key, info in mm.tensors.items():
        text_key = mm.text_key(key)
        floating = info.dtype.is_floating_point
        entry = Entry(key, text_key, out_dtype if (out_dtype and floating) else info.dtype, info.shape)
        lang_key = lang_names.get(text_key)
        if lang_key is None or not is_mergeable(key, info.dtype):
            plan.append(entry)
            continue
        _check_shape(key, info.shape, lang, lang_key)
        if base is not None:
            entry.base_key = base_names.get(text_key)
            if entry.base_key is None:
                raise BabyMergeError(
                    f"base checkpoint {str(base.path)!r} has no parameter {text_key!r} that both models share"
                )
            _check_shape(key, info.shape, base, entry.base_key)
        entry.lang_key = lang_key
        plan.append(entry)
    merged = [e for e in plan if e.lang_key is not None]
    if not merged:
        raise BabyMergeError(
            f"the language-only checkpoint {str(lang.path)!r} ({lang.architecture}) shares no parameter with the "
            f"multimodal one {str(mm.path)!r} ({mm.architecture}): e.g. {next(iter(lang.tensors))!r} vs "
            f"{mm.text_key(next(iter(mm.tensors)))!r}. Is it the language-only twin of the same shape?"
        )
    schedule.check_covers([e.text_key for e in merged])
    for entry in merged:
        entry.alpha = schedule(entry.text_key)
    return plan


def _check_shape(key: str, shape, other: Checkpoint, other_key: str) -> None:
    other_shape = other.tensors[other_key].shape
    if tuple(other_shape) != tuple(shape):
        vocab_differs = ("embed" in key or "lm_head" in key) and shape[0] != other_shape[0]
        hint = (
            " (different vocabulary sizes: were both trained with the same tokenizer?)"
            if vocab_differs
            else " (not the same decoder shape)"
        )
        raise BabyMergeError(
            f"shape mismatch for tensor {key!r}: multimodal {list(shape)} vs {other.role} {list(other_shape)} "
            f"({other_key!r} in {str(other.path)!r}){hint}"
        )


def check_roles(mm: Checkpoint, lang: Checkpoint) -> None:
    """Catch swapped or duplicated inputs: the result keeps only what the multimodal model has."""
    if os.path.realpath(mm.path) == os.path.realpath(lang.path):
        logger.warning(
            f"`mm_ckpt` and `lang_ckpt` are the same checkpoint {str(mm.path)!r}: the merge gives it back unchanged "
            "for every alpha. Was `lang_ckpt` meant to be the language-only twin?"
        )
    if lang.is_llava_layout and not mm.is_llava_layout:
        only_lang = sorted({lang.text_key(k) for k in lang.tensors} - {mm.text_key(k) for k in mm.tensors})
        raise BabyMergeError(
            f"`mm_ckpt` {str(mm.path)!r} is a text-only {mm.architecture} but `lang_ckpt` {str(lang.path)!r} is a "
            f"multimodal {lang.architecture}: the result would lose its multimodal parameters (e.g. {only_lang[:3]}). "
            "Did you swap `mm_ckpt` and `lang_ckpt`?"
        )


def check_tokenizers(mm: Checkpoint, lang: Checkpoint) -> None:
    """Same embedding row must mean the same token in both models."""
    files = [c.path / "tokenizer.json" for c in (mm, lang)]
    if all(f.is_file() for f in files) and files[0].stat().st_size == files[1].stat().st_size:
        if files[0].read_bytes() == files[1].read_bytes():
            return  # the same file: the same ids, without building two vocabularies (~15 MB, 0.1 s)
    vocabs = [_vocab(c) for c in (mm, lang)]
    if None in vocabs:
        missing = " and ".join(f"{c.role} checkpoint {str(c.path)!r}" for c, v in zip((mm, lang), vocabs) if v is None)
        consequence = "the merged checkpoint will have no tokenizer either; " if vocabs[0] is None else ""
        verb = "have" if vocabs == [None, None] else "has"
        logger.warning(
            f"the {missing} {verb} no tokenizer files: cannot check that both models use the same token ids; "
            f"{consequence}copy the tokenizer it was trained with next to its weights (tokenizer.save_pretrained)"
        )
        return
    if vocabs[0] == vocabs[1]:
        return
    a, b = vocabs
    differ = sorted(t for t in set(a) | set(b) if a.get(t) != b.get(t))
    raise BabyMergeError(
        f"the tokenizers of {str(mm.path)!r} and {str(lang.path)!r} differ ({len(a)} vs {len(b)} tokens, "
        f"{len(differ)} tokens with different ids, e.g. {differ[:5]}); their embedding rows do not line up. "
        "Merge models trained with the same tokenizer, or pass `allow_different_tokenizers=True` "
        "if you know the ids agree."
    )


def _vocab(ckpt: Checkpoint) -> dict[str, int] | None:
    """The checkpoint's token -> id map (None if it has no tokenizer files): read from
    ``tokenizer.json`` with ``tokenizers``, or through transformers for other formats."""
    try:
        if (ckpt.path / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(ckpt.path / "tokenizer.json")).get_vocab(with_added_tokens=True)
        if any(ckpt.path.glob("tokenizer*")):
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(ckpt.path).get_vocab()
    except Exception as err:  # tokenizers raises its own Exception type for unreadable files
        raise BabyMergeError(f"cannot load the tokenizer of {ckpt.role} checkpoint {str(ckpt.path)!r}: {err}") from err
    return None
