"""``lm_eval --model babymerge``: evaluate a merged model without writing it to disk.

    lm_eval --model babymerge \\
      --model_args pretrained=runs/mm/ckpt-ep10,lang_ckpt=runs/lang/ckpt-ep10,alpha=0.3 \\
      --tasks blimp --include_path lm_eval_tasks

The multimodal checkpoint (``pretrained``) is merged with ``lang_ckpt`` in memory at load
time (``babymerge.merge``), then scored through lm-eval's ``TemplateLM`` contract. Beyond
lm-eval's ``hf`` model it puts the **black image** in front of text, as the model saw
language-only data in training (``image_prefix=black``; ``none`` scores plain text like
``hf``), scores requests with **images** (``visual``) and requests marked the **BabyLM 2025
pipeline**'s way, and feeds each distinct **prefix** once. This module is the façade:
model_args, loading or merging, the tokenizer contract, generation; ``babymerge.scoring`` scores.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from .checkpoint import SAFE_INDEX_NAME, SAFE_WEIGHTS_NAME, Checkpoint, parse_dtype
from .errors import BabyMergeError
from .memory import check_fits
from .merge import METHODS, merge, parse_alpha
from .merge.mergekit import check_recipe_alone, read_mergekit_config
from .modeling import BabyLlavaForConditionalGeneration
from .prompt import image_prompt
from .scoring.image_cache import ImageFeatureCache
from .scoring.packed import DEFAULT_ROW_WIDTH, PackedScorer
from .scoring.parallel import DataParallel
from .scoring.requests import TOKENS_KEPT, LmEvalEncoder, PipelineEncoder, is_pipeline_request, request_images

IMAGE_PREFIXES = ("black", "none")


class BabyMergeLM(DataParallel, TemplateLM):
    """lm-eval model for BabyLLaVA checkpoints, merged with a language-only twin at load time.

    ``MULTIMODAL`` tells lm-eval it may send image tasks here (a text-only ``pretrained`` then
    refuses them with a clear error).

    Its keyword arguments are the model_args, listed with defaults and meanings in
    ``babymerge.model_args.MODEL_ARGS`` (the table of docs/evaluation.md); a merge method's
    options (``density``, ``scale``, ``seed``, ...) pass through to the merge.

    The class is lm-eval's whole ``LM`` contract (construction from model_args, ranks, the
    tokenizer properties, three request types) plus ``set_alpha`` for sweeps, hence its size;
    each method is short and hands the work to ``babymerge.scoring``, merge or transformers.
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
            beside = {"pretrained": pretrained, "lang_ckpt": lang_ckpt, "base_ckpt": base_ckpt, "alpha": alpha,
                      "merge_method": None if merge_method == "linear" else merge_method, **method_options}  # fmt: skip
            check_recipe_alone("mergekit_config", beside)
            recipe = read_mergekit_config(mergekit_config)
            pretrained, lang_ckpt, base_ckpt = str(recipe.mm), str(recipe.lang), recipe.base
            merge_method, alpha, method_options = recipe.method, recipe.alpha, recipe.options
        # Every argument is checked before the (possibly long) merge or load.
        alpha = _check_arguments(
            pretrained, lang_ckpt, base_ckpt, alpha, dtype, batch_size, image_prefix, method_options
        )
        declared = _declares_babyllava(pretrained)  # None: known once loaded
        if declared is not None:
            _image_prefix(image_prefix, declared, pretrained)

        self._setup_parallel(device)
        start = time.perf_counter()
        self.model, self.remerge, alpha = _load(
            pretrained, lang_ckpt, merge_method, alpha, base_ckpt=base_ckpt, dtype=dtype,
            allow_different_tokenizers=allow_different_tokenizers, keep_sources=keep_sources,
            progress=self.rank == 0, **method_options,
        )  # fmt: skip
        self.merge_seconds = time.perf_counter() - start
        self.model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained)
        self.alpha, self.merge_method, self.pretrained, self.lang_ckpt = alpha, merge_method, pretrained, lang_ckpt

        self.is_multimodal = isinstance(self.model, BabyLlavaForConditionalGeneration)
        self.image_prefix = _image_prefix(image_prefix, self.is_multimodal, pretrained)
        if vision_encoder is not None:  # the user names the encoder (and so vouches for it): encode with it
            self.model.config.vision_encoder = vision_encoder
            self.model.config.image_features_source = "encoder"
        config = self.model.config.get_text_config()
        self._max_length = int(max_length or getattr(config, "max_position_embeddings", 2048))

        self.images = ImageFeatureCache(self.model, self.is_multimodal, pretrained)
        self.scorer = PackedScorer(
            self.model, self.images, self.tokenizer.pad_token_id, self.device, batch_size=batch_size,
            max_batch_size=max_batch_size, token_budget=token_budget, row_width=row_width, prefix_sharing=prefix_sharing,
        )  # fmt: skip
        black = self.image_prefix == "black"
        self.encoder = LmEvalEncoder(
            self.images, self.tok_encode, self._encode_pair, black, self.prefix_token_id, self._max_length
        )
        self.pipeline_encoder = PipelineEncoder(self.images, self.tokenizer, pretrained)
        # tokenised strings are kept: a sweep asks the same texts at every alpha
        self._encode = functools.lru_cache(TOKENS_KEPT)(
            lambda s, special: tuple(self.tokenizer.encode(s, add_special_tokens=special))
        )

    def set_alpha(self, alpha) -> None:
        """Re-merge in place at another alpha (reading the checkpoints again, chunk by chunk)."""
        if self.remerge is None:
            raise BabyMergeError("set_alpha needs lang_ckpt=... and keep_sources=True")
        self.remerge.set_alpha(alpha)
        self.alpha = self.remerge.alpha

    # -- what the scorer holds -------------------------------------------------------------------
    @property
    def batch_size(self) -> int | str:
        return self.scorer.batch_size

    @property
    def prefix_sharing(self) -> bool:
        return self.scorer.prefix_sharing

    @property
    def last_packing(self) -> dict[str, int]:
        """Positions of the last scoring call: each distinct sequence whole, fed, and padded."""
        return self.scorer.last_packing

    @property
    def images_encoded(self) -> int:
        return self.images.encoded

    @property
    def image_token_id(self) -> int | None:
        return self.images.image_token_id

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
        return list(self._encode(string, bool(add_special_tokens)))

    def tok_decode(self, tokens) -> str:
        return self.tokenizer.decode(tokens)

    def get_model_info(self) -> dict:
        return {"babymerge_alpha": self.alpha, "babymerge_method": self.merge_method, "lang_ckpt": self.lang_ckpt,
                "image_prefix": self.image_prefix, "merge_seconds": round(self.merge_seconds, 3)}  # fmt: skip

    # -- scoring -----------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False):
        """Requests marked with ``SCORING_KEY`` go the BabyLM 2025 pipeline's way, the others
        lm-eval's (``babymerge.scoring.requests``): with the black image or images (``visual``)
        as ``image_prompt(context + continuation)``, plain text (``image_prefix=none``) through
        TemplateLM's tokenisation, as with ``hf``."""
        exact = [is_pipeline_request(req.args) for req in requests]
        if any(exact):  # score both kinds, then put the results back in request order
            rest = [req for req, e in zip(requests, exact) if not e]
            others = iter(self.loglikelihood(rest, disable_tqdm) if rest else [])
            pipeline = iter(self._loglikelihood_babylm2025([req for req, e in zip(requests, exact) if e], disable_tqdm))
            return [next(pipeline) if e else next(others) for e in exact]
        images = [request_images(req.args) for req in requests]
        if not any(images) and self.image_prefix != "black":
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        tokenised = [self.encoder.with_images(*req.args[:2], imgs) for req, imgs in zip(requests, images)]
        return self._loglikelihood_tokens(tokenised, disable_tqdm=disable_tqdm)

    def _loglikelihood_babylm2025(self, requests, disable_tqdm: bool = False):
        """Requests scored as the BabyLM 2025 pipeline scores them (``PipelineEncoder``)."""
        return self._score([self.pipeline_encoder.item(req.args) for req in requests], disable_tqdm=disable_tqdm)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        """Score ``(key, context ids, continuation ids)``: sum of continuation log-probs and greedy flag."""
        items, cache_keys = zip(*(self.encoder.item(*req) for req in requests)) if requests else ((), ())
        return self._score(list(items), disable_tqdm=disable_tqdm, cache_keys=cache_keys)

    def _score(self, items, disable_tqdm: bool = False, cache_keys=()) -> list[tuple[float, bool]]:
        """Score items with the packed scorer, checking prefix sharing on first use. With
        ``cache_keys`` (the requests' args, aligned with ``items``; None: not cached), each
        result goes to lm-eval's ``--use_cache`` database as soon as its batch is scored, as
        ``hf`` does, so an interrupted run keeps what it computed."""
        if self.scorer.prefix_sharing and not self.scorer.prefix_sharing_checked:
            self.scorer.check_prefix_sharing(self.encoder.probe(), forward=self._hidden_states)
        keys_of: dict[tuple, list] = {}
        for item, key in zip(items, cache_keys):
            if key is not None:
                keys_of.setdefault(item, []).append(key)

        def cache(item, result):
            for key in keys_of.get(item, ()):
                self.cache_hook.add_partial("loglikelihood", key, result)

        progress = not disable_tqdm and self.rank == 0
        return self.scorer.score(items, forward=self._hidden_states, progress=progress, on_result=cache)

    def _hidden_states(self, rows) -> torch.Tensor:
        """The scorer's forward pass over packed rows, on this instance (so it can be wrapped)."""
        return self.scorer.hidden_states(rows)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Perplexity-style scoring in disjoint windows, as lm-eval's ``hf`` model does
        (``LmEvalEncoder.rolling_windows``)."""
        windows, owners = self.encoder.rolling_windows([req.args[0] for req in requests])
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


# -- model_args ----------------------------------------------------------------------------------
def _check_arguments(pretrained, lang_ckpt, base_ckpt, alpha, dtype, batch_size, image_prefix, method_options):
    """Refuse bad model_args in one line each; returns ``alpha`` parsed (a number, a gradient, or None)."""
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
    parse_dtype(dtype)
    if batch_size != "auto" and not str(batch_size).isdigit():
        raise BabyMergeError(f"batch_size must be an integer or 'auto', got {batch_size!r}")
    if image_prefix is not None and image_prefix not in IMAGE_PREFIXES:
        raise BabyMergeError(f"image_prefix must be one of {IMAGE_PREFIXES}, got {image_prefix!r}")
    _check_local_checkpoint(pretrained, "pretrained", hub_allowed=lang_ckpt is None)
    for name, path in (("lang_ckpt", lang_ckpt), ("base_ckpt", base_ckpt)):
        if path is not None:
            _check_local_checkpoint(path, name, hub_allowed=False)
    return alpha


def _image_prefix(requested: str | None, multimodal: bool, pretrained: str) -> str:
    """The image prefix to use: ``requested``, else ``black`` for BabyLLaVA and ``none`` for a
    text-only model, which has no image to put in front."""
    if requested == "black" and not multimodal:
        raise BabyMergeError(f"image_prefix=black needs a BabyLLaVA checkpoint; {pretrained!r} is a text-only model")
    return requested or ("black" if multimodal else "none")


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


def _declares_babyllava(path: str) -> bool | None:
    """Whether a checkpoint directory's config.json names BabyLLaVA; None when there is no
    readable one (a hub id, or a broken checkpoint that the loader then names)."""
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type") == "babyllava"
    except (OSError, ValueError, AttributeError):
        return None


# -- loading -------------------------------------------------------------------------------------
def _load(pretrained, lang_ckpt, merge_method, alpha, dtype, **merge_args):
    """``(model, re-merger or None, alpha)``: ``pretrained`` merged with ``lang_ckpt`` in memory
    (alpha 0.3 unless given), or ``pretrained`` alone (alpha 0)."""
    if lang_ckpt is None:
        return _from_pretrained(pretrained, parse_dtype(dtype)), None, 0.0
    alpha = 0.3 if alpha is None else alpha
    report = merge(pretrained, lang_ckpt, merge_method, alpha, dtype=dtype, **merge_args)
    return report.model, report.remerge, alpha


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
