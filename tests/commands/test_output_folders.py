"""Commands that write into a folder (--out) refuse one they cannot make, before any work."""

from __future__ import annotations

import pytest

from lmd_bot.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "generate", "--mode", "sd", "--tiny", "--indexes", "0", "--steps", "1"],
        ["eval", "layouts", "--responses", "answers.json"],
        ["eval", "images", "--dir", "some-dir"],
        ["eval", "shapes", "--modes", "sd", "--per-task", "1", "--steps", "1"],
        ["shapes", "train", "--vae-steps", "1"],
        ["shapes", "export"],
        ["shapes", "score", "--eval-modes", ""],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_an_output_folder_that_is_a_file_is_refused_in_one_line(argv, tmp_path, capsys):
    """``eval generate --out FILE`` rendered, then ended in a FileExistsError traceback."""
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(taken)])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(f"argument --out: cannot write the output to {taken}: it is a file, not a folder")
