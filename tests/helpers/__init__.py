"""Helpers shared by several test modules (fixtures live in ``conftest.py``).

``pipeline``: running code where babymerge is not importable (the official pipeline as a client),
``models``: tiny models and independent reads of checkpoint weights, ``data``: small data files
in the exact field layout of real ones, ``files``: outputs looked at from outside (checksums,
leftover temporaries, a full disk), ``commands``: the merge command and its error lines,
``submit``: lm-eval output written by hand for ``babymerge submit``, ``sweep``: what sweeps run on.
"""
