"""The sweep's plots (``babymerge.sweep.plots``): the score against words seen on a log scale,
one line per alpha, beside the score against alpha."""

import pytest


@pytest.mark.slow
def test_words_plot_is_log_scale_one_line_per_alpha(swept, monkeypatch):
    from babymerge.sweep import plots, tidy_rows

    out, cells = swept
    figures = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.setdefault(path.name, fig))
    rows = [r for c in cells for r in tidy_rows(c["checkpoint"], c["alpha"], c["results"], c["words_seen"])]
    plots.plot(out, rows, ["mini_pairs"])
    ax = figures["score_vs_words.png"].axes[0]
    assert ax.get_xscale() == "log" and ax.get_title() == "mini_pairs: acc"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["alpha=0", "alpha=1"]
    for line in ax.get_lines()[:2]:
        assert list(line.get_xdata()) == [1_000_000, 2_000_000, 10_000_000]
    assert "score_vs_alpha.png" in figures
