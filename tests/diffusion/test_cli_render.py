"""``lmd-bot render`` and ``lmd-bot bench render`` with tiny models."""

import json

from PIL import Image

from lmd_bot.cli import main

LAYOUT = {
    "objects": [
        {"id": 1, "caption": "a gray cat", "box": [40, 220, 200, 250]},
        {"id": 2, "caption": "a red ball", "box": [300, 330, 150, 150]},
    ],
    "background": "A realistic photo of a garden",
    "negative": "dogs",
}


def test_render_writes_the_image_and_its_overlay(tmp_path, capsys):
    layout = tmp_path / "scene.json"
    layout.write_text(json.dumps(LAYOUT))
    out = tmp_path / "out" / "img.png"
    argv = ["render", "--layout", str(layout), "--mode", "lmd", "--seed", "7", "--steps", "2"]
    code = main([*argv, "--size", "256", "--tiny", "--out", str(out)])
    assert code == 0
    with Image.open(out) as img:
        assert img.size == (256, 256)
    with Image.open(tmp_path / "out" / "img.overlay.png") as overlay:
        assert overlay.width == 512 and overlay.height > 512  # the layout's canvas plus the legend
    assert "wrote" in capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == ["img.overlay.png", "img.png"]


def test_render_lmd_plus_end_to_end_and_refuse_a_bad_size(tmp_path, capsys):
    layout = tmp_path / "scene.json"
    layout.write_text(json.dumps(LAYOUT))
    out = tmp_path / "img.png"
    argv = ["render", "--layout", str(layout), "--mode", "lmd+", "--steps", "2", "--tiny"]
    assert main([*argv, "--size", "256", "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.size == (256, 256)
    err = capsys.readouterr().err
    assert "objects: step 1/4" in err and "object_runs 2" in err

    bad = tmp_path / "bad.png"
    assert main([*argv, "--size", "300", "--out", str(bad)]) == 2
    assert "size" in capsys.readouterr().err
    assert not bad.exists()


def test_bench_render_prints_a_row_per_mode_and_object_count(capsys):
    code = main(["bench", "render", "--steps", "2", "--objects", "0,1", "--no-sam"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.startswith(("sd ", "lmd "))]
    assert [(r[0], r[1]) for r in rows] == [("sd", "any"), ("lmd", "0"), ("lmd", "1")]
    assert all(float(r[2]) > 0 for r in rows)
    assert rows[2][4] != "0"  # guidance ran for the object
