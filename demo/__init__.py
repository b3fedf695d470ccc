"""The demo and the tiny fixtures the tests, the demo and the benchmarks share; not part of the library.

    python -m demo --out demo_out        # `make demo`: train, merge, evaluate, sweep, submit (run from the repo root)
    python -m demo.data --out data/demo  # the demo corpora only

* ``demo.toy``: tiny random BabyLLaVA checkpoints (and their twins, tokenizer, DINOv2) built locally;
* ``demo.data``: small training corpora, the training workspace and a tiny training config;
* ``demo.__main__``: the end-to-end demo.

It uses ``babymerge`` and ``train``, never the reverse: ``import babymerge`` imports nothing from here.
This folder is not installed with the package; run it from a checkout.
"""
