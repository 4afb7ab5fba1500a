"""`lmd-bot layout`: validate, convert and draw a layout file."""

import json

from lmd_bot.cli import main


def test_layout_command_converts_lmd_text_to_json_and_draws(tmp_path, capsys):
    src = tmp_path / "l.txt"
    src.write_text("[('a cat', [-20, 10, 100, 100])]\nBackground prompt: A room\nNegative prompt: dogs")
    png = tmp_path / "plan.png"
    assert main(["layout", str(src), "--overlay", str(png)]) == 0
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert data["objects"][0]["caption"] == "a cat" and data["negative"] == "dogs"
    assert "note: rescaled all boxes" in out.err
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_layout_command_reports_bad_input_without_traceback(tmp_path, capsys):
    src = tmp_path / "l.json"
    src.write_text('{"objects": [{"id": 1, "caption": "", "box": [0, 0, 5, 5]}]}')
    assert main(["layout", str(src), "--to", "lmd"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "caption" in err and "Traceback" not in err
