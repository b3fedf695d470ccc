"""Corpora -> tokenised, packed training sequences, built once and cached with ``datasets``.

Two kinds of sequence, both exactly ``context_length`` tokens long:

* **Text** (language-only corpora): all segments are tokenised, each followed by ``</s>``,
  concatenated and cut into blocks (nanoGPT-style, no padding at all). With
  ``text_image_prefix: black`` every block starts with an ``<image>`` token that gets the
  black-image feature, as in the paper ("language-only input preceded by black image"), and
  each segment is tokenised as it reads after the image in the prompt
  (``babymerge.prompt.prompt_body``: with its leading space).
* **Image-caption** (multimodal corpora): each example is ``babymerge.prompt.image_prompt(
  caption)`` = ``"<image> " + caption`` (``prompt_body`` after the image token), then ``</s>``; examples are packed greedily, in
  corpus order, into blocks without being split, and only the tail of a block that the next
  example does not fit into is padding (not scored).

The width of the image features is taken from the feature files (``model.feature_size:
null``) or checked against ``model.feature_size``; how they were made (``features.json`` from
``train.encode_images`` beside them, or "precomputed", e.g. the BabyLM 2025 organisers'
``*_dino_v2_states*.npy``), which the model records in its config, is read by ``train.features``.

Each block records which feature row fills each of its ``<image>`` tokens (``-1``: black)
and how many **words** it holds (``n_words``, for the word-count checkpoints): a word is a
whitespace-separated word (``str.split()``) of a text segment or caption as read from the
corpus; a text segment's words count in the block that holds its end (its ``</s>``), a
caption's in its block. The ``<image>`` token, the black-image prefix, ``</s>`` and padding
are not words; segments cut off after the last full block are not counted (not trained on).
Blocks are stored as an Arrow dataset (memory-mapped) under ``data.cache_dir`` in a folder
named by a fingerprint of the input files, tokenizer and packing settings, so a second run,
another rank or a resumed run reuses them. The features themselves are never copied: they
are read, memory-mapped where the format allows, when a batch needs them.
"""

from __future__ import annotations

import glob
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from babymerge.errors import BabyMergeError
from babymerge.prompt import IMAGE_TOKEN, prompt_body

from .config import TrainConfig
from .features import FeatureTable, load_black_feature, read_feature_file

TEXT_SUFFIXES = (".txt", ".train", ".dev", ".test", ".jsonl")
PACKING_VERSION = 2  # bump when the block layout changes, so stale caches are not reused


# -- reading the corpora -------------------------------------------------------------------------
def expand_paths(patterns: list[str], suffixes: tuple[str, ...], what: str) -> list[Path]:
    """Files, directories (searched recursively for ``suffixes``) and globs -> sorted files."""
    files: list[Path] = []
    for pattern in patterns:
        matches = [Path(p) for p in sorted(glob.glob(str(pattern), recursive=True))]
        if not matches:
            raise BabyMergeError(
                f"{what}: {pattern!r} matches no file (check data.* in the config; paths are relative to the current directory)"
            )
        for m in matches:
            files += sorted(p for p in m.rglob("*") if p.suffix in suffixes) if m.is_dir() else [m]
    if patterns and not files:
        raise BabyMergeError(f"{what}: no {'/'.join(suffixes)} files in {patterns}")
    return files


def iter_text(path: Path):
    """Segments of a text file: non-empty lines, or the ``text`` field of JSONL rows."""
    try:
        yield from _iter_text(path)
    except UnicodeDecodeError as err:
        with open(path, "rb") as f:  # find the line: the decoder reports a position in its buffer
            n = next((n for n, raw in enumerate(f, 1) if not _is_utf8(raw)), "?")
        raise BabyMergeError(
            f"{path}:{n}: not valid UTF-8 ({err.reason}); re-encode the file, "
            f"e.g. iconv -f latin1 -t utf-8 {path} > fixed.txt"
        ) from None


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _iter_text(path: Path):
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if path.suffix == ".jsonl":
                if line.strip():
                    try:
                        yield json.loads(line)["text"]
                    except (json.JSONDecodeError, KeyError, TypeError) as err:
                        raise BabyMergeError(f"{path}:{n}: expected a JSON object with a 'text' field ({err})") from err
            elif line.strip():
                yield line.rstrip("\n")


def read_captions(path: Path) -> tuple[list[str], list | None]:
    """Captions (and ids, when every row has one) from JSONL rows or a JSON list."""
    if not path.is_file():
        raise BabyMergeError(f"captions file {str(path)!r} not found")
    if path.suffix == ".json":
        rows = json.loads(path.read_text())
        if not isinstance(rows, list):
            raise BabyMergeError(f"{path}: expected a JSON list of captions (strings or objects)")
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    captions, ids = [], []
    for n, row in enumerate(rows):
        if isinstance(row, str):
            row = {"caption": row}
        text = row.get("caption", row.get("text")) if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise BabyMergeError(f"{path}: caption {n} has no 'caption' (or 'text') string: {str(row)[:100]}")
        captions.append(text)
        ids.append(row.get("id"))
    return captions, (ids if all(i is not None for i in ids) else None)


@dataclass
class MultimodalSource:
    captions: list[str]
    rows: np.ndarray  # feature-table row of each caption


def load_multimodal(config: TrainConfig) -> tuple[list[MultimodalSource], FeatureTable, list[Path]]:
    """Read every ``{captions, features}`` source and check that captions and features align."""
    sources, arrays, files, offset = [], [], [], 0
    width = config.model.feature_size  # None: whatever the feature files hold (all alike)
    for n, spec in enumerate(config.data.multimodal):
        if (
            not isinstance(spec, dict)
            or set(spec) - {"captions", "features"}
            or not {"captions", "features"} <= set(spec)
        ):
            raise BabyMergeError(
                f"data.multimodal[{n}] must be {{captions: FILE, features: FILE or [FILES]}}, got {spec!r}"
            )
        cap_path = Path(spec["captions"])
        captions, cap_ids = read_captions(cap_path)
        feat_paths = [Path(p) for p in ([spec["features"]] if isinstance(spec["features"], str) else spec["features"])]
        parts = [read_feature_file(p) for p in feat_paths]
        for p, (array, _) in zip(feat_paths, parts):
            if width is None:
                width = array.shape[1]
            if array.shape[1] != width:
                what = "model.feature_size is" if config.model.feature_size else "the other feature files are"
                raise BabyMergeError(
                    f"{p}: features are {array.shape[1]}-d but {what} {width} (DINOv2-large gives 1024, the BabyLM 2025 "
                    "release 768; set model.feature_size to match the encoder that made them, or null to take it from the files)"
                )
        count = sum(len(a) for a, _ in parts)
        feat_ids = sum((ids for _, ids in parts), []) if all(ids is not None for _, ids in parts) else None
        if cap_ids is not None and feat_ids is not None:
            where = {i: r for r, i in enumerate(feat_ids)}
            missing = [i for i in cap_ids if i not in where]
            if missing:
                raise BabyMergeError(
                    f"{cap_path}: {len(missing)} caption id(s) have no feature row in {[str(p) for p in feat_paths]}, e.g. {missing[:3]}"
                )
            rows = np.array([where[i] for i in cap_ids], dtype=np.int64)
        elif count != len(captions):
            raise BabyMergeError(
                f"{cap_path} has {len(captions)} captions but {[str(p) for p in feat_paths]} hold {count} feature rows "
                f"({' + '.join(str(len(a)) for a, _ in parts)}); "
                "they are aligned by index, so the counts must match (or give both captions and features ids)"
            )
        else:
            rows = np.arange(count, dtype=np.int64)
        sources.append(MultimodalSource(captions, rows + offset))
        arrays += [a for a, _ in parts]
        files += [cap_path, *feat_paths]
        offset += count
    return sources, FeatureTable(arrays), files


# -- packing -----------------------------------------------------------------------------------
def tokenize(tokenizer, texts: list[str], desc: str, batch: int = 10_000):
    """Token ids of each text, without special tokens, tokenised in batches (fast tokenizers parallelise a batch)."""
    for start in tqdm(range(0, len(texts), batch), desc=desc, unit_scale=batch, disable=len(texts) <= batch):
        yield from tokenizer(texts[start : start + batch], add_special_tokens=False)["input_ids"]


def pack_text(token_lists, ctx: int, eos: int, image_token: int | None, words) -> tuple[np.ndarray, list, np.ndarray]:
    """Concatenate ``segment </s>`` streams and cut them into ``ctx``-token blocks (an
    ``<image>`` first when ``image_token`` is given). ``words[i]``, segment i's word count,
    goes to the block holding its ``</s>``: returns blocks, image rows, words per block."""
    lengths = []

    def stream_of(lists):
        for ids in lists:
            lengths.append(len(ids) + 1)
            yield from ids
            yield eos

    stream = np.fromiter(stream_of(token_lists), dtype=np.int32)
    body = ctx - (image_token is not None)
    n = len(stream) // body
    blocks = stream[: n * body].reshape(n, body)
    if image_token is not None:
        blocks = np.concatenate([np.full((n, 1), image_token, np.int32), blocks], axis=1)
    end_block = (np.cumsum(np.asarray(lengths, dtype=np.int64)) - 1) // body
    kept = end_block < n
    words = np.asarray(words, dtype=np.int64)
    n_words = np.bincount(end_block[kept], weights=words[kept], minlength=n).astype(np.int64)
    return blocks, [[-1] if image_token is not None else [] for _ in range(n)], n_words


def pack_captions(token_lists, feature_rows: np.ndarray, ctx: int, eos: int, pad: int, image_token: int, words):
    """Greedy packing of whole ``<image> caption </s>`` examples into ``ctx``-token blocks;
    returns blocks, image rows, tokens and words (``words[i]``: caption i's) per block."""
    blocks, images, n_tokens, n_words = [], [], [], []
    current, current_images, current_words = [], [], 0

    def flush():
        if current:
            n_tokens.append(len(current))
            blocks.append(current + [pad] * (ctx - len(current)))
            images.append(list(current_images))
            n_words.append(current_words)

    for ids, row, w in zip(token_lists, feature_rows, words):
        example = [image_token, *ids, eos][:ctx]
        if len(current) + len(example) > ctx:
            flush()
            current, current_images, current_words = [], [], 0
        current += example
        current_images.append(int(row))
        current_words += w
    flush()
    return np.array(blocks, dtype=np.int32).reshape(-1, ctx), images, n_tokens, np.array(n_words, dtype=np.int64)


def _fingerprint(config: TrainConfig, tokenizer, files: list[Path]) -> str:
    h = hashlib.sha256()
    settings = [PACKING_VERSION, config.model.kind, config.model.context_length, config.data.text_image_prefix]
    h.update(json.dumps(settings).encode())
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


@dataclass
class TrainingData:
    blocks: datasets.Dataset  # noqa: F821  columns input_ids [ctx], images [n], n_tokens
    features: FeatureTable
    black: np.ndarray | None  # the black-image feature (width feature_size)

    def __len__(self) -> int:
        return len(self.blocks)


def build_blocks(config: TrainConfig, tokenizer, is_builder: bool = True, barrier=lambda: None) -> TrainingData:
    """Read, tokenise and pack the corpora once (on the builder rank) and load the cached blocks.

    ``barrier`` lets the other ranks wait until the builder rank has written the cache.
    """
    import datasets

    image_token = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) if config.model.kind == "babyllava" else None
    if config.model.kind == "babyllava" and (image_token is None or image_token == tokenizer.unk_token_id):
        raise BabyMergeError(
            f"the tokenizer in {config.tokenizer!r} has no <image> token; train it with `python -m train.tokenizer`"
        )
    text_files = expand_paths(config.data.text, TEXT_SUFFIXES, "data.text")
    sources, features, mm_files = load_multimodal(config)
    if not text_files and not sources:
        raise BabyMergeError("no training data: set data.text and/or data.multimodal in the config")
    ctx = config.model.context_length
    cache = Path(config.data.cache_dir) / _fingerprint(config, tokenizer, text_files + mm_files)
    if is_builder and not (cache / "dataset_info.json").is_file():
        eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        parts = []
        if text_files:
            segments = [s for f in text_files for s in iter_text(f)]
            prefix = image_token if config.data.text_image_prefix == "black" else None
            words = [len(s.split()) for s in segments]
            if prefix is not None:  # each segment as it reads after the black image in the prompt
                segments = [prompt_body(s) for s in segments]
            token_lists = tokenize(tokenizer, segments, "tokenising text")
            blocks, images, n_words = pack_text(token_lists, ctx, eos, prefix, words)
            parts.append((blocks, images, [ctx] * len(blocks), n_words))
        for src in sources:  # image_prompt(caption) = "<image> " + caption; its image token is added by pack_captions
            words = [len(c.split()) for c in src.captions]
            token_lists = tokenize(tokenizer, [prompt_body(c) for c in src.captions], "tokenising captions")
            parts.append(pack_captions(token_lists, src.rows, ctx, eos, pad, image_token, words))
        blocks = np.concatenate([p[0] for p in parts])
        if len(blocks) == 0:
            raise BabyMergeError(
                f"the corpora hold fewer than {ctx} tokens: not one block of model.context_length={ctx}"
            )
        dataset = datasets.Dataset.from_dict(
            {"input_ids": blocks, "images": sum((p[1] for p in parts), []),
             "n_tokens": np.concatenate([p[2] for p in parts]), "n_words": np.concatenate([p[3] for p in parts])},
            features=datasets.Features({
                "input_ids": datasets.Sequence(datasets.Value("int32"), length=ctx),
                "images": datasets.Sequence(datasets.Value("int64")),
                "n_tokens": datasets.Value("int32"),
                "n_words": datasets.Value("int64"),
            }),
        )  # fmt: skip
        tmp = None
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.tmp-", dir=cache.parent))  # published by a rename
            dataset.save_to_disk(str(tmp))
        except OSError as err:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise BabyMergeError(
                f"cannot write the data cache in {str(cache.parent)!r}: {err.strerror or err}; "
                "set data.cache_dir to a writable folder with room for the packed data"
            ) from None
        try:
            tmp.rename(cache)
        except OSError:  # another run with the same data finished first: its blocks are the same
            shutil.rmtree(tmp, ignore_errors=True)
    barrier()
    blocks = datasets.load_from_disk(str(cache)).with_format("numpy")
    width = config.model.feature_size or (features.arrays[0].shape[1] if features.arrays else None)
    return TrainingData(blocks, features, load_black_feature(config, width) if image_token is not None else None)


def make_batch(data: TrainingData, index: np.ndarray, image_token: int | None) -> dict:
    """Model inputs for the blocks at ``index``: ids, labels (padding and image tokens not
    scored) and the features that fill the ``<image>`` tokens in order."""
    rows = data.blocks[np.asarray(index)]
    input_ids = torch.from_numpy(np.asarray(rows["input_ids"], dtype=np.int64))
    labels = input_ids.clone()
    labels[
        torch.arange(input_ids.shape[1]) >= torch.from_numpy(np.asarray(rows["n_tokens"], dtype=np.int64))[:, None]
    ] = -100
    batch = {"input_ids": input_ids, "labels": labels}
    if image_token is not None:
        labels[input_ids == image_token] = -100
        wanted = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows["images"]])
        if len(wanted):
            feats = np.empty((len(wanted), len(data.black)), dtype=np.float32)
            feats[wanted < 0] = data.black
            if (wanted >= 0).any():
                feats[wanted >= 0] = data.features.rows(wanted[wanted >= 0])
            batch["image_features"] = torch.from_numpy(feats)
    return batch
