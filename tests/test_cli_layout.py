"""`lmd-bot layout`: validate, convert and draw a layout file."""

import io
import json
import sys

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


def _layout_error(capsys, *args: str) -> str:
    """Runs `lmd-bot layout ARGS`, expecting a refusal; returns the one line the user is told."""
    assert main(["layout", *args]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "Traceback" not in out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


def test_layout_command_on_unreadable_input_says_what_is_wrong_in_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert _layout_error(capsys, str(missing)) == (
        f"error: cannot read {missing}: there is no such layout file"
    )
    assert _layout_error(capsys, str(tmp_path)) == (
        f"error: cannot read {tmp_path}: it is a folder, not a layout file"
    )
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    assert _layout_error(capsys, str(binary)) == (
        f"error: cannot read {binary}: it is binary data, not UTF-8 text"
    )
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"[('a cat', [0, 0, 9, 9])]\x00\x00")
    assert _layout_error(capsys, str(nul)) == f"error: cannot read {nul}: it is binary data, not UTF-8 text"


def test_layout_command_reads_json_that_starts_with_a_byte_order_mark(tmp_path, capsys):
    src = tmp_path / "windows.json"
    src.write_bytes(b'\xef\xbb\xbf{"objects": [{"id": 1, "caption": "a cat", "box": [10, 10, 100, 100]}]}')
    assert main(["layout", str(src)]) == 0
    assert json.loads(capsys.readouterr().out)["objects"][0]["caption"] == "a cat"


def test_layout_command_refuses_deeply_nested_json(tmp_path, capsys):
    src = tmp_path / "deep.json"
    src.write_text('{"objects": ' + "[" * 9000 + "]" * 9000 + "}")
    assert _layout_error(capsys, str(src)) == "error: the JSON is nested too deeply to be a layout"


def test_layout_command_overlay_to_an_unwritable_path(tmp_path, capsys):
    src = tmp_path / "l.txt"
    src.write_text("[('a cat', [10, 10, 100, 100])]\nBackground prompt: A room")
    (tmp_path / "afile").write_text("")
    target = tmp_path / "afile" / "plan.png"  # root writes through chmod; a file in the way stops it
    assert _layout_error(capsys, str(src), "--overlay", str(target)) == (
        f"error: cannot write the plan picture to {target}: {tmp_path / 'afile'} is a file, not a folder"
    )
    assert _layout_error(capsys, str(src), "--overlay", str(tmp_path)) == (
        f"error: cannot write the plan picture to {tmp_path}: it is a folder"
    )


def test_an_empty_layout_file_is_called_empty(tmp_path, capsys):
    """It was 'the answer has no "Background prompt:" line', the planner's words, for a file
    (layout and render --layout) that holds nothing at all."""
    for name, text in (("empty.json", ""), ("blank.txt", "  \n\n")):
        (tmp_path / name).write_text(text)
        told = "error: the layout is empty: give it as JSON or in the LMD text format"
        assert _layout_error(capsys, str(tmp_path / name)) == told


def test_layout_command_reads_stdin_as_it_reads_files(monkeypatch, capsys):
    """Piped in, a Latin-1 layout is named as not UTF-8 (it was an "object list" error), and
    UTF-16 with a byte-order mark is read, as from a file."""
    lmd = "[('un café', [1, 1, 20, 30])]\nBackground prompt: x"
    stdin = io.TextIOWrapper(io.BytesIO(lmd.encode("latin-1")), encoding="utf-8", errors="surrogateescape")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert _layout_error(capsys, "-").startswith("error: cannot read stdin: it is not UTF-8 text")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lmd.encode("utf-16")), encoding="utf-8"))
    assert main(["layout", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["objects"][0]["caption"] == "un café"
