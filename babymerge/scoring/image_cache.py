"""Images of scored requests: each distinct picture encoded once, and written into token sequences.

The scorer's sequences are tuples of ints: a token id, or ``-1 - n`` for an image token
filled by image number ``n`` (the black image, which stands for "no image", is number 0). So
two sequences after different images never share a prefix, and the packed rows need no side
table to know which feature goes where.
"""

from __future__ import annotations

import hashlib
import io
import weakref

import torch
from PIL import Image, ImageFile

from ..errors import BabyMergeError

BLACK = "black"  # image key of the black image that stands for "no image"


def image_key(image) -> str:
    """Content hash of a PIL image: equal pictures share one encoding."""
    h = hashlib.sha1(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def decoded_copy(image):
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


class ImageFeatureCache:
    """Features of the images a model has been asked about, by content hash, and their numbers.

    ``model``: a BabyLLaVA model (``encode_images``, ``black_image_features``), or a text-only
    one, which refuses images. ``name`` says which model in that error. Features are kept on
    the CPU in float32 for the whole run (one vector per distinct picture).
    """

    def __init__(self, model, multimodal: bool, name: str):
        self.model, self.multimodal, self.name = model, multimodal, name
        self.image_token_id = model.config.image_token_id if multimodal else None
        self.features: dict[str, torch.Tensor] = {}  # image hash -> feature
        self.by_object: dict[int, tuple[weakref.ref, str]] = {}  # id(image) -> (the image, its hash)
        self.keys, self.numbers = [BLACK], {BLACK: 0}  # image number <-> image hash
        self.encoded = 0  # pictures encoded so far

    def key(self, image) -> str:
        """The image's key, its feature encoded once per distinct picture. lm-eval holds every
        request's image until the run ends, so a lazily opened one (``Image.open``, not decoded
        yet, as the VQA task hands them) is decoded into a private copy that is dropped here:
        one decoded picture at a time, not all of them. Requests sharing an image object (a
        question's candidates) reuse its key."""
        if not self.multimodal:
            raise BabyMergeError(f"this task gives images, but {self.name!r} is a text-only model")
        known = self.by_object.get(id(image))
        if known is not None and known[0]() is image:
            return known[1]
        pixels = decoded_copy(image)
        key = image_key(pixels)
        if key not in self.features:
            self.features[key] = self.model.encode_images(images=[pixels.convert("RGB")])[0].float().cpu()
            self.encoded += 1
        try:
            self.by_object[id(image)] = (weakref.ref(image), key)
        except TypeError:  # not weak-referenceable: no reuse by object
            pass
        return key

    def symbols(self, tokens: list[int], images: tuple[str, ...]) -> tuple[int, ...]:
        """Token ids, with each image token written as ``-1 - <image number>``, filled by the
        keys in ``images`` in order. Image tokens beyond them get the black image, as in
        ``BabyLlavaModel``."""
        images = iter(images)
        symbols = []
        for token in tokens:
            if token == self.image_token_id:
                key = next(images, BLACK)
                if key not in self.numbers:
                    self.numbers[key] = len(self.keys)
                    self.keys.append(key)
                token = -1 - self.numbers[key]
            symbols.append(token)
        return tuple(symbols)

    def feature(self, number: int) -> torch.Tensor:
        """The feature of image number ``number`` (the black image's is read from the model)."""
        key = self.keys[number]
        return self.model.model.black_image_features.float().cpu() if key == BLACK else self.features[key]
