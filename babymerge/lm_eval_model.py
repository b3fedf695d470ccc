"""``lm_eval --model babymerge``: evaluate a merged model without writing it to disk.

    lm_eval --model babymerge \\
      --model_args pretrained=runs/mm/ckpt-ep10,lang_ckpt=runs/lang/ckpt-ep10,alpha=0.3 \\
      --tasks blimp --include_path lm_eval_tasks

The multimodal checkpoint (``pretrained``) is merged with ``lang_ckpt`` in memory at load
time (``babymerge.merge``), then scored through lm-eval's ``TemplateLM`` contract. Beyond
lm-eval's ``hf`` model it:

* puts the **black image** in front of text, as the model saw language-only data in
  training (``image_prefix=black``; ``none`` scores plain text like ``hf``);
* scores **loglikelihood requests with images** (the last argument carries ``visual``):
  each distinct image is encoded once by the model's DINOv2 and fills the image token;
* feeds each distinct **prefix** once: the requests' token sequences are packed as a prefix
  tree into rows with a tree attention mask (``babymerge.prefix_tree``; on BLiMP 1.7x fewer
  positions than scoring each sentence whole), and the LM head runs only where a token is
  scored;
* batches rows by a token budget, one forward per batch under ``inference_mode``.

Sorting is lexicographic, not by length as with lm-eval's ``Collator``: neighbours in that
order share the longest prefixes, and the packed rows all have about the same length, so
padding stays small anyway (``last_packing`` reports the counts).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import logging
import math
import os
import re
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from PIL import Image, ImageFile
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer

from .babylm.scoring import SCORING_KEY, pipeline_tokens
from .checkpoint import SAFE_INDEX_NAME, SAFE_WEIGHTS_NAME, Checkpoint, parse_dtype
from .errors import BabyMergeError
from .memory import check_fits
from .merge import METHODS, merge, parse_alpha
from .merge.mergekit import read_mergekit_config
from .modeling import BabyLlavaForConditionalGeneration
from .prefix_tree import pack_prefix_tree
from .prompt import image_prompt, prompt_body

logger = logging.getLogger(__name__)

IMAGE_PREFIXES = ("black", "none")
BLACK = "black"  # image key of the black image that stands for "no image"
# Padded tokens per forward pass when batch_size=auto. On CPUs, activations that stay in
# cache beat bigger matmuls (2048 was fastest on BLiMP with a ~20M model); GPUs want more.
DEFAULT_TOKEN_BUDGET = {"cpu": 2048, "cuda": 16384}
# Positions a packed prefix-tree row holds beyond its longest sequence: long enough that the
# prefix a row repeats from the previous one is cheap, short enough that attention over the
# row stays small (96-256 were equally fast on BLiMP with a ~20M model on CPU).
DEFAULT_ROW_WIDTH = 128


def _image_key(image) -> str:
    """Content hash of a PIL image: equal pictures share one encoding."""
    h = hashlib.sha1(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def _decoded_copy(image):
    """``image``, decoded into a new object if it is a lazily opened file or bytes not decoded yet
    (PIL's ``ImageFile`` with tiles left to read), so that the caller's object stays undecoded;
    any other image as it is."""
    if not isinstance(image, ImageFile.ImageFile) or not image.tile or image.fp is None:
        return image
    if image.filename:
        copy = Image.open(image.filename)
    elif isinstance(image.fp, io.BytesIO):
        copy = Image.open(io.BytesIO(image.fp.getvalue()))
    else:
        return image
    copy.load()
    return copy


class BabyMergeLM(TemplateLM):
    """lm-eval model for BabyLLaVA checkpoints, merged with a language-only twin at load time.

    ``MULTIMODAL`` tells lm-eval it may send image tasks here (a text-only ``pretrained`` then
    refuses them with a clear error).

    Args (``--model_args``):
        pretrained: multimodal checkpoint directory (or any HF causal LM: text only).
        lang_ckpt: language-only checkpoint to merge in; none: evaluate ``pretrained`` as is.
        alpha: weight of the language-only model, in [0, 1] (default 0.3 with ``lang_ckpt``,
            0 without); ``0;0.5`` is a layer gradient (``;`` because model_args split on ``,``).
        merge_method: ``linear`` (default) or any registered method (``babymerge methods``);
            their options (``density``, ``scale``, ``seed``, ...) and ``base_ckpt`` pass through.
        mergekit_config: a mergekit YAML recipe instead of pretrained/lang_ckpt/alpha/method
            (``babymerge.merge.mergekit_config``).
        dtype: ``float32`` (default), ``bfloat16``, ``float16``.
        device: ``cpu``, ``cuda``, ``cuda:1``... (default: cuda if available).
        batch_size: an int (packed rows per forward pass), or ``auto`` (default): as many rows
            as fit ``token_budget`` padded tokens (default 2048 on CPU, 16384 on GPU).
        row_width: positions a packed row holds beyond its longest sequence (default 128).
        prefix_sharing: feed each distinct prefix once (default true). Needs a model that
            honours custom 4D attention masks and position ids; checked on first use, with a
            warning and a fall-back to one sequence per row when it does not.
        max_length: longest input in tokens (default: the model's ``max_position_embeddings``).
        image_prefix: ``black`` (default for BabyLLaVA: the black image precedes text, as in
            training) or ``none``.
        vision_encoder: override the DINOv2 named in the checkpoint's config (hub id or dir).
        allow_different_tokenizers: merge even if the tokenizers differ.
        keep_sources: keep the checkpoints open so ``set_alpha`` can re-merge in place (sweeps).
    """

    MULTIMODAL = True

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        """``--model_args`` win over the CLI's ``--batch_size``/``--device`` (which lm-eval passes
        always, with its own defaults): ``batch_size=8`` as a model_arg is what the user asked for."""
        return cls.create_from_arg_obj(lm_utils.simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    def __init__(
        self,
        pretrained: str | None = None,
        lang_ckpt: str | None = None,
        alpha: float | str | None = None,
        merge_method: str = "linear",
        base_ckpt: str | None = None,
        dtype: str = "float32",
        device: str | None = None,
        batch_size: int | str = "auto",
        max_batch_size: int | None = None,
        max_length: int | None = None,
        token_budget: int | None = None,
        row_width: int = DEFAULT_ROW_WIDTH,
        prefix_sharing: bool = True,
        image_prefix: str | None = None,
        vision_encoder: str | None = None,
        allow_different_tokenizers: bool = False,
        keep_sources: bool = False,
        mergekit_config: str | None = None,
        **method_options: Any,
    ):
        super().__init__()
        if mergekit_config is not None:  # a mergekit recipe names the models, method, weights and options
            if pretrained or lang_ckpt or base_ckpt or alpha is not None or method_options or merge_method != "linear":
                raise BabyMergeError(
                    "mergekit_config is the whole recipe: drop pretrained, lang_ckpt, base_ckpt, alpha, merge_method and method options"
                )
            recipe = read_mergekit_config(mergekit_config)
            pretrained, lang_ckpt, base_ckpt, merge_method = (
                str(recipe.mm),
                str(recipe.lang),
                recipe.base,
                recipe.method,
            )
            alpha, method_options = recipe.alpha, recipe.options
        if pretrained is None:
            raise BabyMergeError("--model babymerge needs pretrained=<checkpoint> (or mergekit_config=<recipe.yml>)")
        unknown = sorted(set(method_options) - {o for m in METHODS.values() for o in m.options})
        if unknown:
            valid = sorted(set(inspect.signature(BabyMergeLM.__init__).parameters) - {"self", "method_options"})
            valid += sorted({o for m in METHODS.values() for o in m.options})
            raise BabyMergeError(f"unknown model_args {unknown} for --model babymerge; valid: {', '.join(valid)}")
        if isinstance(alpha, str):
            alpha = parse_alpha(alpha)
        if lang_ckpt is None and alpha not in (None, 0, 0.0):
            raise BabyMergeError(f"alpha={alpha} needs lang_ckpt=<language-only checkpoint> to merge with")
        # Every argument is checked before the (possibly long) merge or load.
        torch_dtype = parse_dtype(dtype)
        if batch_size != "auto" and not str(batch_size).isdigit():
            raise BabyMergeError(f"batch_size must be an integer or 'auto', got {batch_size!r}")
        if image_prefix is not None and image_prefix not in IMAGE_PREFIXES:
            raise BabyMergeError(f"image_prefix must be one of {IMAGE_PREFIXES}, got {image_prefix!r}")
        _check_local_checkpoint(pretrained, "pretrained", hub_allowed=lang_ckpt is None)
        for name, path in (("lang_ckpt", lang_ckpt), ("base_ckpt", base_ckpt)):
            if path is not None:
                _check_local_checkpoint(path, name, hub_allowed=False)
        if image_prefix == "black" and Path(pretrained).is_dir() and not _is_babyllava(pretrained):
            raise BabyMergeError(
                f"image_prefix=black needs a BabyLLaVA checkpoint; {pretrained!r} is a text-only model"
            )

        self._setup_parallel(device)
        start = time.perf_counter()
        if lang_ckpt is not None:
            alpha = 0.3 if alpha is None else alpha
            report = merge(
                pretrained, lang_ckpt, merge_method, alpha, base_ckpt=base_ckpt, dtype=dtype,
                allow_different_tokenizers=allow_different_tokenizers, keep_sources=keep_sources,
                progress=self.rank == 0, **method_options,
            )  # fmt: skip
            self.model, self.remerge = report.model, report.remerge
        else:
            alpha = 0.0
            self.model, self.remerge = _from_pretrained(pretrained, torch_dtype), None
        self.merge_seconds = time.perf_counter() - start
        self.model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained)
        self.alpha, self.merge_method, self.pretrained, self.lang_ckpt = alpha, merge_method, pretrained, lang_ckpt

        self.is_multimodal = isinstance(self.model, BabyLlavaForConditionalGeneration)
        image_prefix = image_prefix or ("black" if self.is_multimodal else "none")
        if image_prefix == "black" and not self.is_multimodal:
            raise BabyMergeError(
                f"image_prefix=black needs a BabyLLaVA checkpoint; {pretrained!r} is a text-only {type(self.model).__name__}"
            )
        self.image_prefix = image_prefix
        self.image_token_id = self.model.config.image_token_id if self.is_multimodal else None
        if vision_encoder is not None:  # the user names the encoder (and so vouches for it): encode with it
            self.model.config.vision_encoder = vision_encoder
            self.model.config.image_features_source = "encoder"

        config = self.model.config.get_text_config()
        self._max_length = int(max_length or getattr(config, "max_position_embeddings", 2048))
        self.batch_size = batch_size if batch_size == "auto" else int(batch_size)
        self.max_batch_size = max_batch_size
        self.token_budget = int(token_budget or DEFAULT_TOKEN_BUDGET.get(self.device.type, 2048))
        self.row_width, self.prefix_sharing, self._prefix_sharing_checked = int(row_width), bool(prefix_sharing), False
        self._features: dict[str, torch.Tensor] = {}  # image hash -> DINOv2 feature
        self._image_of_object: dict[int, tuple[weakref.ref, str]] = {}  # id(image) -> (the image, its hash)
        self._image_keys, self._image_numbers = [BLACK], {BLACK: 0}  # image number <-> image hash
        self.images_encoded = 0

    def set_alpha(self, alpha) -> None:
        """Re-merge in place at another alpha (reading the checkpoints again, chunk by chunk)."""
        if self.remerge is None:
            raise BabyMergeError("set_alpha needs lang_ckpt=... and keep_sources=True")
        self.remerge.set_alpha(alpha)
        self.alpha = self.remerge.alpha

    # -- processes -----------------------------------------------------------------------
    def _setup_parallel(self, device: str | None) -> None:
        """Data parallel like lm-eval's ``hf`` model: under ``accelerate launch`` (GPUs) or
        ``torchrun`` (GPUs or CPU processes) each process evaluates its share of the requests
        and lm-eval gathers the results. On CPU, Accelerate must be told so (``cpu=True``),
        else it sees one process and every rank would evaluate everything."""
        self.accelerator = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import Accelerator

            on_cpu = not torch.cuda.is_available() or str(device or "").startswith("cpu")
            self.accelerator = Accelerator(cpu=on_cpu)
            self._rank = self.accelerator.process_index
            self._world_size = self.accelerator.num_processes
            self._device = self.accelerator.device
        elif device and not (device.startswith("cuda") and not torch.cuda.is_available()):
            self._device = torch.device(device)
        else:  # like lm-eval's hf model: the CLI's default "cuda:0" means "the GPU if there is one"
            self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def all_gather(self, tensor):
        return self.accelerator.gather(tensor) if self.accelerator else tensor

    def gather_object(self, obj, dst: int = 0):
        """lm-eval gathers every rank's per-sample metrics through this; without it only
        rank 0's share would be scored."""
        if not self.accelerator:
            return [obj]
        result = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj=obj, object_gather_list=result, dst=dst)
        return result

    def barrier(self) -> None:
        if self.accelerator:
            self.accelerator.wait_for_everyone()

    @property
    def device(self):
        return self._device

    # -- TemplateLM's tokenizer contract ----------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context becomes: the (black) image token, else BOS as in ``hf``."""
        if self.image_prefix == "black":
            return self.image_token_id
        return self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

    def tok_decode(self, tokens) -> str:
        return self.tokenizer.decode(tokens)

    def get_model_info(self) -> dict:
        return {"babymerge_alpha": self.alpha, "babymerge_method": self.merge_method, "lang_ckpt": self.lang_ckpt,
                "image_prefix": self.image_prefix, "merge_seconds": round(self.merge_seconds, 3)}  # fmt: skip

    # -- scoring -----------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False):
        """Requests with the black image or with images (``visual``) become
        ``image_prompt(context + continuation)`` = ``"<image> " + text``, the prompt of training
        and of the BabyLM pipeline (``babymerge.prompt``), its image token filled by the
        request's image or the black one (more images: more image tokens in front). Plain text
        (``image_prefix=none``) goes through TemplateLM's tokenisation, as with ``hf``. Requests marked with
        ``babylm2025.SCORING_KEY`` are scored as the BabyLM 2025 pipeline scores them."""
        exact = [len(req.args) > 2 and bool(req.args[2].get(SCORING_KEY)) for req in requests]
        if any(exact):  # score both kinds, then put the results back in request order
            rest = [req for req, e in zip(requests, exact) if not e]
            others = iter(self.loglikelihood(rest, disable_tqdm) if rest else [])
            pipeline = iter(self._loglikelihood_babylm2025([req for req, e in zip(requests, exact) if e], disable_tqdm))
            return [next(pipeline) if e else next(others) for e in exact]
        images = [req.args[2].get("visual") if len(req.args) > 2 else None for req in requests]
        if not any(images) and self.image_prefix != "black":
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        if not self.is_multimodal:
            raise BabyMergeError(f"this task gives images, but {self.pretrained!r} is a text-only model")
        new_reqs = []
        for req, visual in zip(requests, images):
            context, continuation = req.args[:2]
            visual = visual if isinstance(visual, list) else [visual] if visual is not None else []
            keys = tuple(self._encode_image(img) for img in visual)
            new_reqs.append(((context, continuation, keys), *self._prompt_pair(context, continuation, len(keys))))
        return self._loglikelihood_tokens(new_reqs, disable_tqdm=disable_tqdm)

    def _pipeline_processor(self):
        """What the 2025 pipeline tokenises a candidate with: ``AutoProcessor`` of the checkpoint.
        For BabyLLaVA that is ``BabyLlavaProcessor`` (the tokenizer, writing ``"<image> " + text``;
        built here from the multimodal checkpoint's files, as the pipeline's remote code would);
        for a text model it is the tokenizer itself."""
        if not self.is_multimodal:
            return self.tokenizer
        if getattr(self, "_processor", None) is None:
            from .processing import BabyLlavaProcessor

            try:  # the image processor only rides along: images reach the model through encode_images
                image_processor = AutoImageProcessor.from_pretrained(self.pretrained)
            except (OSError, ValueError):  # a checkpoint written before processors were saved
                # the PIL one by name: ``BitImageProcessor`` is the torchvision backend, which
                # without torchvision falls back to this one with a notice in every process
                from transformers import BitImageProcessorPil

                image_processor = BitImageProcessorPil()
            self._processor = BabyLlavaProcessor(image_processor=image_processor, tokenizer=self.tokenizer)
        return self._processor

    def _loglikelihood_babylm2025(self, requests, disable_tqdm: bool = False):
        """The BabyLM 2025 pipeline's scoring: ``context + continuation`` is the candidate
        sentence, tokenised whole as the pipeline tokenises it (``_pipeline_processor``), and
        the tokens overlapping ``continuation`` are scored (``babylm2025.pipeline_tokens``). No
        black image is added here: what precedes the text is the processor's business, as in the
        pipeline (ours writes ``"<image> " + text``). Images (``visual``) fill the sentence's image
        tokens in order; the items share prefixes like any others. Sequences are not truncated
        (the pipeline does not)."""
        processor = self._pipeline_processor()
        items = []
        for req in requests:
            context, continuation, options = req.args[:3]
            visual = options.get("visual")
            visual = visual if isinstance(visual, list) else [visual] if visual is not None else []
            if visual and not self.is_multimodal:
                raise BabyMergeError(f"this task gives images, but {self.pretrained!r} is a text-only model")
            tokens, n_scored = pipeline_tokens(processor, context, continuation)
            items.append((self._symbols(tokens, tuple(self._encode_image(img) for img in visual)), n_scored))
        if self.prefix_sharing and not self._prefix_sharing_checked:
            self._check_prefix_sharing()
        return self._score(items, disable_tqdm=disable_tqdm)

    def _prompt_pair(self, context: str, continuation: str, n_images: int = 1) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) of ``image_prompt(context + continuation)``, split
        where the continuation starts: lm-eval's ``("", " The cat.")`` and the pipeline's
        ``"The cat."`` both give ``<image> ĠThe Ġcat .`` with ``ĠThe Ġcat .`` scored."""
        full = image_prompt(context + continuation)
        context_enc, continuation_enc = self._encode_pair(full[: len(full) - len(continuation)], continuation)
        return [self.image_token_id] * max(n_images - 1, 0) + context_enc, continuation_enc

    def _encode_image(self, image) -> str:
        """The image's key, its feature encoded once per distinct picture. lm-eval holds every
        request's image until the run ends, so a lazily opened one (``Image.open``, not decoded
        yet, as the VQA task hands them) is decoded into a private copy that is dropped here:
        one decoded picture at a time, not all of them. Requests sharing an image object (a
        question's candidates) reuse its key."""
        known = self._image_of_object.get(id(image))
        if known is not None and known[0]() is image:
            return known[1]
        pixels = _decoded_copy(image)
        key = _image_key(pixels)
        if key not in self._features:
            self._features[key] = self.model.encode_images(images=[pixels.convert("RGB")])[0].float().cpu()
            self.images_encoded += 1
        try:
            self._image_of_object[id(image)] = (weakref.ref(image), key)
        except TypeError:  # not weak-referenceable: no reuse by object
            pass
        return key

    def _with_prefix(self, context_enc: list[int]) -> list[int]:
        """Black image in front of text, unless the context already starts with an image."""
        if self.image_prefix == "black" and context_enc[:1] != [self.image_token_id]:
            return [self.image_token_id] + context_enc
        return context_enc

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        """Score (context, continuation) token lists: sum of continuation log-probs and greedy flag.

        The sequences are packed as a prefix tree (``babymerge.prefix_tree``): each distinct
        prefix is fed once, in rows of ``row_width`` positions beyond their longest sequence; as
        many rows as fit ``token_budget`` (or ``batch_size`` rows) go through one forward pass.
        """
        items, cache_keys = [], []
        for key, context_enc, continuation_enc in requests:
            images = key[2] if len(key) > 2 else ()
            tokens = (self._with_prefix(list(context_enc)) + list(continuation_enc))[-(self.max_length + 1) :]
            items.append((self._symbols(tokens, images), min(len(continuation_enc), len(tokens) - 1)))
            # lm-eval's cache key is the request's args; text requests only (rolling windows are
            # cached per document, image requests hold the images, not our hashes of them)
            cache_keys.append(key if len(key) == 2 and key[0] is not None else None)
        if self.prefix_sharing and not self._prefix_sharing_checked:
            self._check_prefix_sharing()
        return self._score(items, disable_tqdm=disable_tqdm, cache_keys=cache_keys)

    def _symbols(self, tokens: list[int], images: tuple[str, ...]) -> tuple[int, ...]:
        """Token ids, with each image token written as ``-1 - <image number>`` (the black image
        is number 0) so that sequences after different images never share a prefix. Image
        tokens beyond the request's images get the black image, as in ``BabyLlavaModel``."""
        images = iter(images)
        symbols = []
        for token in tokens:
            if token == self.image_token_id:
                key = next(images, BLACK)
                if key not in self._image_numbers:
                    self._image_numbers[key] = len(self._image_keys)
                    self._image_keys.append(key)
                token = -1 - self._image_numbers[key]
            symbols.append(token)
        return tuple(symbols)

    def _score(
        self, items: list[tuple[tuple[int, ...], int]], disable_tqdm: bool = False, cache_keys=None
    ) -> list[tuple[float, bool]]:
        """``items``: (symbols, number of scored symbols at the end). Identical items are scored once.

        With ``cache_keys`` (the requests' args, aligned with ``items``), each result goes to
        lm-eval's ``--use_cache`` database as soon as its batch is scored, as ``hf`` does, so an
        interrupted run keeps what it computed."""
        keys_of: dict[tuple, list] = {}
        for item, key in zip(items, cache_keys or []):
            if key is not None:
                keys_of.setdefault(item, []).append(key)
        unique = list(dict.fromkeys(items))
        sequences = list(dict.fromkeys(symbols for symbols, _ in unique))
        rows, placements = pack_prefix_tree(sequences, self.row_width, share_prefixes=self.prefix_sharing)
        placement = dict(zip(sequences, placements))
        batches = self._batch_rows(rows)
        self.last_packing = {
            "positions": sum(len(s) - 1 for s in sequences),  # scoring each distinct sequence whole
            "fed": sum(map(len, rows)),
            "padded": sum((last - first) * max(map(len, rows[first:last])) for first, last in batches),
        }
        batch_of_row = {row: b for b, (first, last) in enumerate(batches) for row in range(first, last)}
        todo: dict[int, list[tuple]] = {}
        for item in unique:
            todo.setdefault(batch_of_row[placement[item[0]][0]], []).append(item)

        results: dict[tuple, tuple[float, bool]] = {}
        bar = tqdm(total=len(unique), disable=disable_tqdm or self.rank != 0, desc="babymerge loglikelihood")
        with torch.inference_mode():
            for b, (first, last) in enumerate(batches):
                hidden = self._hidden_states(rows[first:last])
                width = hidden.shape[1]
                hidden = hidden.reshape(-1, hidden.shape[-1])
                batch_items = todo.get(b, [])
                positions, targets, lengths = [], [], []
                for symbols, n_scored in batch_items:
                    row, path = placement[symbols]
                    offset = (row - first) * width
                    positions += [offset + p for p in path[len(path) - n_scored :]]
                    targets += symbols[len(symbols) - n_scored :]
                    lengths.append(n_scored)
                for item, result in zip(batch_items, self._logprobs(hidden, positions, targets, lengths)):
                    results[item] = result
                    for key in keys_of.get(item, ()):
                        self.cache_hook.add_partial("loglikelihood", key, result)
                bar.update(len(batch_items))
        bar.close()
        return [results[item] for item in items]

    def _batch_rows(self, rows) -> list[tuple[int, int]]:
        """Consecutive rows per forward pass, as ``(first, last + 1)``: ``batch_size`` rows, or
        with ``auto`` as many as fit ``token_budget`` padded positions (at least one)."""
        auto = self.batch_size == "auto"
        max_rows = (self.max_batch_size or len(rows)) if auto else self.batch_size
        batches, first = [], 0
        while first < len(rows):
            last, width = first + 1, len(rows[first])
            while last < len(rows) and last - first < max_rows:
                wider = max(width, len(rows[last]))
                if auto and (last + 1 - first) * wider > self.token_budget:
                    break
                last, width = last + 1, wider
            batches.append((first, last))
            first = last
        return batches

    def _hidden_states(self, rows) -> torch.Tensor:
        """Final hidden states ``[rows, width, hidden]`` of packed rows; the LM head is applied
        later, only where a token is scored."""
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        symbols = torch.full((len(rows), width), pad, dtype=torch.long)
        depths = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            symbols[r, : len(row)] = torch.tensor(row.symbols)
            depths[r, : len(row)] = torch.tensor(row.depths)
        images = symbols < 0
        input_ids = symbols.masked_fill(images, self.image_token_id if self.image_token_id is not None else pad)
        call = {"input_ids": input_ids.to(self.device)}
        if self.prefix_sharing:
            masks = np.stack([row.attention_mask(width) for row in rows])[:, None]
            call.update(attention_mask=torch.from_numpy(masks).to(self.device), position_ids=depths.to(self.device))
        if images.any():  # one feature per image token, in reading order
            call["image_features"] = torch.stack([self._image_feature(-1 - int(s)) for s in symbols[images]]).to(
                self.device
            )
        body = getattr(self.model, self.model.base_model_prefix)  # .model (Llama, Llava), .transformer (GPT-2)
        return body(**call).last_hidden_state

    def _logprobs(self, hidden, positions, targets, lengths) -> list[tuple[float, bool]]:
        """Sum of log P(target) at the given positions of the flattened hidden states, per
        item, and whether every target was the argmax. A position shared by several items
        goes through the LM head once."""
        if not lengths:
            return []
        if not positions:
            return [(0.0, True)] * len(lengths)
        unique, inverse = torch.tensor(positions, device=hidden.device).unique(return_inverse=True)
        logits = self.model.get_output_embeddings()(hidden[unique]).float()
        target = torch.tensor(targets, device=logits.device)
        picked = (logits[inverse, target] - logits.logsumexp(-1)[inverse]).double().cpu().split(lengths)
        greedy = (logits.argmax(-1)[inverse] == target).cpu().split(lengths)
        return [(float(p.sum()), bool(g.all())) for p, g in zip(picked, greedy)]

    def _image_feature(self, number: int) -> torch.Tensor:
        key = self._image_keys[number]
        return self.model.model.black_image_features.float().cpu() if key == BLACK else self._features[key]

    def _check_prefix_sharing(self) -> None:
        """Prefix sharing needs a model that honours a custom 4D attention mask and position
        ids (Llama-style models in transformers do; models that derive positions from a 2D mask,
        or use ALiBi, may not). Score two sequences that share a prefix, packed together and
        apart; if they differ, warn and fall back to one sequence per row."""
        self._prefix_sharing_checked = True
        start = self._symbols([self.prefix_token_id], ())
        probe = [
            (start + tuple(tokens), len(tokens))
            for tokens in map(self.tok_encode, (" the dog saw a cat", " the dog ran"))
        ]
        together = self._score(probe, disable_tqdm=True)
        self.prefix_sharing = False
        apart = self._score(probe, disable_tqdm=True)
        tolerance = 1e-3 if self.model.dtype == torch.float32 else 5e-2
        self.prefix_sharing = all(abs(a[0] - b[0]) < tolerance for a, b in zip(together, apart))
        if not self.prefix_sharing:
            logger.warning(
                f"{type(self.model).__name__} ignores custom attention masks or position ids: scoring "
                "without prefix sharing (slower, same results). Pass prefix_sharing=False to skip this check."
            )

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Perplexity-style scoring in disjoint windows, as lm-eval's ``hf`` model does; with
        the black image every window starts with it (one position less for text) and the text
        is tokenised as it reads in ``image_prompt`` (with its leading space)."""
        window = self.max_length - (1 if self.image_prefix == "black" else 0)
        windows, owners = [], []
        for i, (string,) in enumerate(req.args[:1] for req in requests):
            for context, continuation in map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(prompt_body(string) if self.image_prefix == "black" else string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=window,
                    context_len=1,
                ),
            ):
                windows.append(((None, None), context, continuation))
                owners.append(i)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for owner, (score, _) in zip(owners, scores):
            totals[owner] += score
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy generation (after the black image, for BabyLLaVA) until a stop string."""
        out = []
        for req in tqdm(requests, disable=disable_tqdm or self.rank != 0, desc="babymerge generate"):
            context, gen_kwargs = req.args[:2]
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.pop("until", None) or [self.tok_decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.pop("max_gen_toks", 256))
            ids = self.tok_encode(image_prompt(context)) if self.image_prefix == "black" else self.tok_encode(context)
            ids = ids or [self.prefix_token_id]
            ids = ids[-max(self.max_length - max_new, 1) :]
            with torch.inference_mode():
                generated = self.model.generate(
                    input_ids=torch.tensor([ids], device=self.device),
                    attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=self.device),
                    max_new_tokens=max_new, do_sample=False, pad_token_id=self.eot_token_id,
                    eos_token_id=self.eot_token_id, stop_strings=until, tokenizer=self.tokenizer,
                )  # fmt: skip
            text = self.tok_decode(generated[0, len(ids) :].tolist())
            for stop in until:
                text = text.split(stop)[0]
            self.cache_hook.add_partial("generate_until", req.args, text)
            out.append(text)
        return out


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _check_local_checkpoint(path: str, name: str, hub_allowed: bool) -> None:
    """A model_arg naming a checkpoint must be a directory; only ``pretrained`` without a merge
    may be a hub id (``org/model``), which transformers then fetches."""
    if Path(path).is_dir():
        return
    if hub_allowed and _HUB_ID.fullmatch(str(path)) and not Path(path).exists():
        return
    what = "is not a directory" if Path(path).exists() else "does not exist"
    raise BabyMergeError(f"{name}={str(path)!r} {what}; give the checkpoint directory (written by save_pretrained)")


def _is_babyllava(path: str) -> bool:
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type") == "babyllava"
    except (OSError, ValueError):
        return True  # unreadable: the loader below says what is wrong


def _from_pretrained(pretrained: str, dtype: torch.dtype):
    """``AutoModelForCausalLM.from_pretrained``, its "not found" errors said in one line. A
    local safetensors checkpoint is read as a merge reads it first: a truncated or corrupt
    file is named, and a model that does not fit the memory left is refused before loading
    (the model at ``dtype``, and its files, which transformers maps while it loads them)."""
    if any((Path(pretrained) / name).is_file() for name in (SAFE_WEIGHTS_NAME, SAFE_INDEX_NAME)):
        tensors = Checkpoint(pretrained, "pretrained").tensors.values()
        model = sum(math.prod(t.shape) * (dtype if t.dtype.is_floating_point else t.dtype).itemsize for t in tensors)
        check_fits(
            model + sum(t.nbytes for t in tensors), f"loading {pretrained} as {str(dtype).removeprefix('torch.')}"
        )
    try:
        return AutoModelForCausalLM.from_pretrained(pretrained, dtype=dtype)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BabyMergeError(
            f"pretrained={pretrained!r} is neither a checkpoint directory nor a model that could be loaded from "
            f"the Hugging Face hub ({first})"
        ) from err
