"""Train the byte-level BPE tokenizer on both corpora, as the paper did.

    python -m train.tokenizer --data data/babylm --vocab-size 32768 --out tokenizer

Reads every text file under ``--data`` (``.txt``/``.train``: one segment per line;
``.jsonl``: a ``text`` or ``caption`` field; ``.json``: a list of captions), trains with
``tokenizers`` (``babymerge.tokenization.train_bpe_tokenizer``: the same special tokens at
the same ids as every babymerge model, ``<image>`` included) and saves a ``transformers``
fast tokenizer. It prints the corpus's word-to-subword ratio, subword tokens per
whitespace-separated word, which the paper reports as 1.36 for its BabyLM tokenizer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from babymerge.errors import BabyMergeError
from babymerge.publish import atomic_output_dir
from babymerge.tokenization import train_bpe_tokenizer

from .data import TEXT_SUFFIXES, expand_paths, iter_text, read_captions, tokenize


def iter_segments(files: list[Path]):
    for f in files:
        if f.suffix in (".json", ".jsonl"):
            captions, _ = read_captions(f)  # accepts a "caption" or a "text" field
            yield from captions
        else:
            yield from iter_text(f)


def word_to_subword_ratio(tokenizer, segments: list[str]) -> tuple[float, int, int]:
    subwords = sum(map(len, tokenize(tokenizer, segments, "counting subwords")))
    words = sum(len(s.split()) for s in segments)
    return subwords / max(words, 1), words, subwords


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.tokenizer", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, nargs="+", help="directories, files or globs of text and caption files")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--min-frequency", type=int, default=2)
    p.add_argument("--out", required=True, help="output directory (a transformers tokenizer)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        files = expand_paths(args.data, (*TEXT_SUFFIXES, ".json"), "--data")
        segments = list(iter_segments(files))
        tokenizer = train_bpe_tokenizer(segments, vocab_size=args.vocab_size, min_frequency=args.min_frequency)
        ratio, words, subwords = word_to_subword_ratio(tokenizer, segments)
        with atomic_output_dir(args.out, overwrite=args.overwrite) as tmp:
            tokenizer.save_pretrained(tmp)
            stats = {
                "files": [str(f) for f in files],
                "vocab_size": len(tokenizer),
                "words": words,
                "subwords": subwords,
                "word_to_subword_ratio": ratio,
            }
            (tmp / "corpus_stats.json").write_text(json.dumps(stats, indent=2))
    except BabyMergeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"tokenizer: {args.out} ({len(tokenizer)} tokens, trained on {len(files)} files)")
    print(
        f"word-to-subword ratio: {ratio:.2f} ({subwords} subwords / {words} words; the paper's BabyLM tokenizer: 1.36)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
