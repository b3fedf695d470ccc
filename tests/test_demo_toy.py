"""``python -m demo.toy``, the toy checkpoints the quick start and the tests start from."""

import pytest


def test_toy_refuses_an_existing_out_and_leaves_it_alone(tmp_path, capsys):
    from demo.toy import main

    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit) as exit:
        main(["--out", str(tmp_path / "toy")])
    assert exit.value.code == 2
    assert (
        capsys.readouterr().err.splitlines()[-1]
        == f"python -m demo.toy: error: --out {tmp_path / 'toy'} exists; give a new folder"
    )
    assert [p.name for p in (tmp_path / "toy").iterdir()] == ["mine.txt"]
