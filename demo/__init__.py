"""The demo and the tiny fixtures the tests, the demo and the benchmarks share; not part of the library.

    python -m demo --out demo_out            # `make demo`: train, merge, evaluate, sweep, submit (run from the repo root)
    python -m demo.world --out demo_out/world  # the demo's synthetic world only
    python -m demo.babylm2025_data --out DIR   # a synthetic BabyLM 2025 evaluation_data/ tree only
    python -m demo.toy --out toy               # tiny random twins + a tiny evaluation_data/ (the README's quick start)

* ``demo.toy``: tiny random BabyLLaVA checkpoints (and their twins, tokenizer, DINOv2) built locally;
* ``demo.data``: the training tests' and benchmarks' small corpora, workspace and a tiny training config
  (``python -m demo.data --out DIR`` writes the corpora);
* ``demo.world``: the demo's synthetic world (grammar, pictures, held-out test sets) and the twins' training;
* ``demo.babylm2025_data``: BabyLM 2025 evaluation data in the official pipeline's layout;
* ``demo.__main__``: the end-to-end demo.

It uses ``babymerge`` and ``train``, never the reverse: ``import babymerge`` imports nothing from here.
This folder is not installed with the package; run it from a checkout.
"""
