"""The two request conventions ``--model babymerge`` scores, turned into scorer items.

An item is ``(symbols, n_scored)`` (``packed.Item``): the sequence the model reads, images
written as ``ImageFeatureCache.symbols`` does, and how many symbols at its end are scored.

* **lm-eval's** (``LmEvalEncoder``): ``(context, continuation)``, split into token lists as
  lm-eval's ``TemplateLM`` splits them. With the black image (BabyLLaVA's default) or images
  (the request's ``visual``), the text is ``image_prompt(context + continuation)``, the
  prompt of training; the black image goes in front of text that does not start with an
  image; sequences are cut from the left to ``max_length`` inputs.
* **The BabyLM 2025 pipeline's** (``PipelineEncoder``, requests whose extra argument dict has
  ``SCORING_KEY``): ``context + continuation`` is the candidate sentence, tokenised whole by
  the checkpoint's processor, as the pipeline tokenises it, and the tokens overlapping
  ``continuation`` are scored (``babylm.scoring.pipeline_tokens``). Not truncated.
"""

from __future__ import annotations

from lm_eval import utils as lm_utils
from transformers import AutoImageProcessor

from ..babylm.scoring import SCORING_KEY, pipeline_tokens
from ..prompt import image_prompt, prompt_body
from .image_cache import ImageFeatureCache

# Two sentences that share a prefix: scored packed together and apart, they tell whether a
# model honours the tree attention mask (``PackedScorer.check_prefix_sharing``).
PROBE = (" the dog saw a cat", " the dog ran")
# Tokenised texts an encoder keeps (a sweep asks the same texts at every alpha), dropped when full.
TOKENS_KEPT = 1 << 18


def request_images(args) -> list:
    """The images of a request (its arguments ``args``): ``visual``, one image or a list."""
    visual = args[2].get("visual") if len(args) > 2 else None
    return visual if isinstance(visual, list) else [visual] if visual is not None else []


def is_pipeline_request(args) -> bool:
    """Whether a loglikelihood request asks to be scored as the BabyLM 2025 pipeline scores."""
    return len(args) > 2 and bool(args[2].get(SCORING_KEY))


class LmEvalEncoder:
    """lm-eval's ``(context, continuation)`` convention.

    ``encode``/``encode_pair``: the adapter's ``tok_encode`` and ``TemplateLM._encode_pair``;
    ``black_prefix``: the black image precedes text (``image_prefix=black``);
    ``prefix_token_id``: what an empty context becomes; ``max_length``: longest input.
    """

    def __init__(
        self, images: ImageFeatureCache, encode, encode_pair, black_prefix: bool, prefix_token_id: int, max_length: int
    ):
        self.images, self.encode, self.encode_pair = images, encode, encode_pair
        self.black_prefix, self.prefix_token_id, self.max_length = black_prefix, prefix_token_id, max_length

    def with_images(self, context: str, continuation: str, images: list) -> tuple[tuple, list[int], list[int]]:
        """lm-eval's ``(key, context ids, continuation ids)`` of a request read after images
        (the black one if none): ``image_prompt(context + continuation)``, split where the
        continuation starts. lm-eval's ``("", " The cat.")`` and the pipeline's ``"The cat."``
        both give ``<image> ĠThe Ġcat .`` with ``ĠThe Ġcat .`` scored. More images: more image
        tokens in front. The key carries the images' cache keys."""
        keys = tuple(self.images.key(image) for image in images)
        full = image_prompt(context + continuation)
        context_enc, continuation_enc = self.encode_pair(full[: len(full) - len(continuation)], continuation)
        context_enc = [self.images.image_token_id] * max(len(keys) - 1, 0) + context_enc
        return (context, continuation, keys), context_enc, continuation_enc

    def item(self, key: tuple, context_enc: list[int], continuation_enc: list[int]):
        """``(item, cache key)`` of one tokenised request. The cache key (for lm-eval's
        ``--use_cache``) is the request's args, for text requests only: rolling windows are
        cached per document, and image requests hold the images, not our hashes of them."""
        images = key[2] if len(key) > 2 else ()
        context_enc = list(context_enc)
        if self.black_prefix and context_enc[:1] != [self.images.image_token_id]:
            context_enc = [self.images.image_token_id] + context_enc  # unless it starts with an image already
        tokens = (context_enc + list(continuation_enc))[-(self.max_length + 1) :]
        item = (self.images.symbols(tokens, images), min(len(continuation_enc), len(tokens) - 1))
        return item, key if len(key) == 2 and key[0] is not None else None

    def rolling_windows(self, strings: list[str]) -> tuple[list[tuple], list[int]]:
        """Perplexity-style disjoint windows of each string, as lm-eval's ``hf`` model makes
        them, as ``(key, context ids, continuation ids)``, and the index of the string each
        belongs to. With the black image every window starts with it (one position less for
        text) and the text is tokenised as it reads in ``image_prompt`` (with its leading space)."""
        window = self.max_length - (1 if self.black_prefix else 0)
        windows, owners = [], []
        for i, string in enumerate(strings):
            tokens = self.encode(prompt_body(string) if self.black_prefix else string)
            for context, continuation in map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=tokens, prefix_token=self.prefix_token_id, max_seq_len=window, context_len=1
                ),
            ):
                windows.append(((None, None), context, continuation))
                owners.append(i)
        return windows, owners

    def probe(self) -> list:
        """Items of ``PROBE``, each after the empty context's prefix token."""
        start = self.images.symbols([self.prefix_token_id], ())
        return [(start + tuple(tokens), len(tokens)) for tokens in map(self.encode, PROBE)]


class PipelineEncoder:
    """The BabyLM 2025 pipeline's convention. No black image is added: what precedes the text
    is the processor's business, as in the pipeline (ours writes ``"<image> " + text``).
    Images (``visual``) fill the sentence's image tokens in order."""

    def __init__(self, images: ImageFeatureCache, tokenizer, pretrained: str):
        self.images, self.tokenizer, self.pretrained = images, tokenizer, pretrained
        self._processor = None
        self._tokens: dict[tuple[str, str], tuple[list[int], int]] = {}  # (context, continuation) -> tokens

    def processor(self):
        """What the pipeline tokenises a candidate with: ``AutoProcessor`` of the checkpoint.
        For BabyLLaVA that is ``BabyLlavaProcessor`` (the tokenizer, writing ``"<image> " + text``;
        built here from the multimodal checkpoint's files, as the pipeline's remote code would);
        for a text model it is the tokenizer itself."""
        if not self.images.multimodal:
            return self.tokenizer
        if self._processor is None:
            from ..processing import BabyLlavaProcessor

            try:  # the image processor only rides along: images reach the model through encode_images
                image_processor = AutoImageProcessor.from_pretrained(self.pretrained)
            except (OSError, ValueError):  # a checkpoint written before processors were saved
                # the PIL one by name: ``BitImageProcessor`` is the torchvision backend, which
                # without torchvision falls back to this one with a notice in every process
                from transformers import BitImageProcessorPil

                image_processor = BitImageProcessorPil()
            self._processor = BabyLlavaProcessor(image_processor=image_processor, tokenizer=self.tokenizer)
        return self._processor

    def item(self, args):
        """The item of one request (its arguments ``(context, continuation, options)``)."""
        context, continuation = args[:2]
        keys = tuple(self.images.key(image) for image in request_images(args))
        if (context, continuation) not in self._tokens:
            if len(self._tokens) >= TOKENS_KEPT:
                self._tokens.clear()
            self._tokens[context, continuation] = pipeline_tokens(self.processor(), context, continuation)
        tokens, n_scored = self._tokens[context, continuation]
        return self.images.symbols(tokens, keys), n_scored
