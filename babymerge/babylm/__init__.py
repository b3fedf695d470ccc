"""The BabyLM contract: what this project shares with the BabyLM evaluation pipelines, each in one place.

* ``tasks``: the pipelines' tasks and subtask lists (BLiMP UIDs, the supplement, EWoK domains,
  entity tracking, COMPS, GLUE) and ``TASKS``, the table of our 2025 lm-eval tasks.
* ``scoring``: the tie rule and the metric names every choice task reports (``acc``: a tie is
  wrong; ``acc_pipeline``: the pipelines' argmax, a tie is right; ``ties``), the pipelines'
  choice, and which tokens the 2025 pipeline scores.
* ``checkpoints``: the word-count schedule and the ``chck_<N>M`` checkpoint names, read back
  exactly (``train/`` writes them, ``babymerge sweep`` pairs them, the 2025 file orders by them).
* ``submission2024``, ``submission2025``: the two leaderboard file writers; ``submit``: the
  ``babymerge submit --format 2024|2025`` command; ``sizes``: what the 2025 file must hold, as
  the pipeline's ``collate_preds.py`` checks it (tracks, tasks, the count of every subtask).
* ``reading``: the 2025 reading tasks' ΔR² scores, for the lm-eval tasks and the submission alike.
* ``aoa`` (``babymerge aoa``): the 2025 age-of-acquisition surprisals over word-count
  checkpoints; ``aoa_score``: the organisers' AoA score from them, and learning-curve plots.
* ``devbench`` (``babymerge devbench``): DevBench's visual vocabulary, TROG and THINGS for
  BabyLLaVA; ``comparison``: the pipeline's own comparison with the human data, run unmodified.
"""
