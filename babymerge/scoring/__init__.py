"""The scoring engine behind ``lm_eval --model babymerge`` (``babymerge.lm_eval_model``).

* ``requests``: the two request conventions (lm-eval's, the BabyLM 2025 pipeline's), turned
  into items ``(symbols, number of scored symbols)``;
* ``image_cache``: each distinct image encoded once, and written into the symbols;
* ``prefix_tree``: packing sequences so that each distinct prefix is fed once;
* ``packed``: the scorer, batching packed rows through the model;
* ``parallel``: lm-eval's data-parallel contract (which process scores what).
"""
