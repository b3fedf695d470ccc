"""BabyLLaVA's processor: the tokenizer and DINOv2's image processor, with the prompt built in.

``AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)`` returns it (the
official BabyLM 2025 pipeline loads every submission so). Calling it on a text gives the
ids of ``"<image> " + text`` (``prompt.image_prompt``), the form the model was trained on
and the paper's authors evaluated with; the ``<image>`` token gets no image and so the black
one (``modeling.py``), unless ``images`` are given: then their ``pixel_values`` fill it,
encoded and pooled as the checkpoint's config records. A text that already starts with
``<image>`` is left as it is.

Offsets (``return_offsets_mapping=True``) are given in the caller's text, not the prompt's:
the ``<image>`` token is ``(0, 0)`` and every later token ends at 1 or after. That is what
the pipeline's scorer needs: it scores every token whose end offset lies past the start of
the sentence, i.e. exactly the tokens after the image token, as training and lm-eval do.
The pipeline's reading task calls it as a tokenizer (``processor(text)``, and
``add_special_tokens=False`` for a word's own tokens): both work.

Text pairs, as a tokenizer takes them (a list of ``(first, second)`` tuples, or ``text_pair=``;
the pipeline's GLUE fine-tuner passes them with padding and truncation) become
``prompt.pair_prompt``: ``"<image> " + first + "</s>"`` and ``" " + second``, two consecutive
text segments as training packed them after the black image.

This file is copied beside the weights of every checkpoint, so it imports nothing from
babymerge but its sibling files.
"""

from __future__ import annotations

from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .prompt import IMAGE_TOKEN, image_prompt, pair_prompt


class BabyLlavaProcessor(ProcessorMixin):
    """Tokenizer + image processor; texts become ``"<image> " + text`` (``add_image_prompt``)."""

    def __init__(self, image_processor=None, tokenizer=None, add_image_prompt: bool = True, **kwargs):
        self.add_image_prompt = add_image_prompt
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(
        self,
        images=None,
        text=None,
        text_pair=None,
        return_offsets_mapping: bool = False,
        return_tensors=None,
        **kwargs,
    ):
        """``processor(text=...)``, ``processor(text=..., images=...)``; also ``processor("a text")`` as one
        calls a tokenizer (the pipeline's reading task does), and text pairs as a tokenizer takes
        them: ``processor([(first, second), ...])`` or ``text_pair=``. ``add_special_tokens=False``
        gives the text's own tokens, without the prompt, as a tokenizer leaves out BOS (the reading
        task finds a word's token ids so)."""
        if text is None and _is_text(images):
            images, text = None, images
        data = {}
        if text is not None:
            single = isinstance(text, str)
            texts = [text] if single else [t if isinstance(t, str) else tuple(t) for t in text]
            if text_pair is not None:
                texts = list(zip(texts, [text_pair] if isinstance(text_pair, str) else text_pair, strict=True))
            pairs = any(isinstance(t, tuple) for t in texts)
            if pairs and return_offsets_mapping:
                raise ValueError("BabyLlavaProcessor gives offsets of single texts, not of text pairs")
            add_prompt = self.add_image_prompt and kwargs.get("add_special_tokens", True)
            prompts = [self._prompt(t) if add_prompt else t for t in texts]
            enc = self.tokenizer(prompts, return_offsets_mapping=return_offsets_mapping, **kwargs)
            data = dict(enc)
            if return_offsets_mapping:
                shifts = [len(p) - len(t) for p, t in zip(prompts, texts)]
                data["offset_mapping"] = [
                    self._text_offsets(o, shift) for o, shift in zip(enc["offset_mapping"], shifts)
                ]
            if single and return_tensors is None:  # one text: unbatched lists, batched tensors, as a tokenizer
                data = {k: v[0] for k, v in data.items()}
        if images is not None:
            data["pixel_values"] = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _prompt(self, text):
        """The model's input for a text (``image_prompt``) or a text pair (``pair_prompt``); a
        text that already starts with ``<image>`` is left as it is."""
        if isinstance(text, str):
            return text if text.startswith(IMAGE_TOKEN) else image_prompt(text)
        first, second = text
        if first.startswith(IMAGE_TOKEN):
            return first, second
        return pair_prompt(first, second, self.tokenizer.eos_token)

    @staticmethod
    def _text_offsets(offsets, shift: int) -> list[tuple[int, int]]:
        """Offsets in the prompt -> offsets in the caller's text: the image token is ``(0, 0)``,
        every later token ends at 1 or after, so all of them count as the text's (a token that
        holds only the prompt's space, ``Ġ`` before a word the vocabulary lacks with its space,
        is scored too, as in training and in lm-eval's ``" " + sentence``)."""
        if not shift:
            return [tuple(o) for o in offsets]
        return [(0, 0)] + [(max(s - shift, 0), max(e - shift, 1)) for s, e in offsets[1:]]

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


def _is_text(value) -> bool:
    """A string or a non-empty list of strings or of string pairs (what a positional first
    argument holds when it is text)."""
    if isinstance(value, str):
        return True
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, str) or _is_pair(v) for v in value)


def _is_pair(value) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, str) for v in value)
