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


def test_bench_render_prints_every_mode_and_follow_up_round_with_its_costs(capsys):
    argv = ["bench", "render", "--steps", "2", "--objects", "2", "--no-sam", "--size", "128"]
    assert main([*argv, "--candidates", "2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    rows = {
        (r[0], r[1]): r
        for r in (line.split() for line in lines if not line.startswith(" "))
        if r and r[0] in ("sd", "lmd", "lmd+", "fast")
    }
    follow_ups = ("first", "2-cand", "move", "change", "unbatched")
    assert list(rows) == [
        ("sd", "first"),
        ("sd", "2-cand"),
        *(("lmd", r) for r in follow_ups),
        *(("lmd+", r) for r in follow_ups),
        ("fast", "first"),
        ("fast", "2-cand"),
    ]
    # Columns: mode round objects s/image obj-s UNet fwd guided SAM runs reused peak x-sd sd-u best-u
    runs_reused = {key: (int(r[9]), int(r[10])) for key, r in rows.items()}
    for mode in ("lmd", "lmd+"):
        assert runs_reused[(mode, "first")] == (2, 0)
        assert runs_reused[(mode, "move")] == (0, 2)  # the move reuses both objects' runs
        assert runs_reused[(mode, "change")] == (1, 1)
        assert runs_reused[(mode, "unbatched")] == (2, 0)
        # Per-object runs one by one: two denoising calls per step instead of one.
        assert int(rows[(mode, "unbatched")][6]) == int(rows[(mode, "first")][6]) + 2
    assert int(rows[("lmd+", "move")][6]) == 2  # the overall run only: 2 steps
    assert all(float(r[3]) > 0 and float(r[12]) > 0 for r in rows.values())
    assert rows[("sd", "first")][12] == "1.00"
    # Two candidates: the UNet calls of one image, each twice as wide; twice the runs.
    for mode in ("sd", "lmd", "lmd+", "fast"):
        assert rows[(mode, "2-cand")][5] == rows[(mode, "first")][5]
    assert runs_reused[("lmd", "2-cand")] == (4, 0)
    assert "2 candidates (one batched job" in out
    ratios = [line.split() for line in lines if line.startswith("  ") and "x the sd units" in line]
    assert [r[0] for r in ratios] == ["sd", "lmd", "lmd+", "fast"]
    assert all(1.5 < float(r[6].rstrip("x")) <= 2.0 for r in ratios)  # FLOPs: twice, less shared text
    # Compute in sd units: plain SD at 2 steps is 2 of the 50 CFG steps of one unit, plus a decode.
    units = {key: (r[13], r[14]) for key, r in rows.items()}
    assert units[("sd", "first")] == ("0.07", "-")
    for key, (worst, best) in units.items():
        if key[0] != "sd" and key[1] != "unbatched":
            assert float(worst) >= float(best) > 0
    # Guidance that never stops costs more (at 2 steps, lmd guides both steps and fast only the first).
    assert float(units[("lmd", "first")][0]) > float(units[("lmd", "first")][1])
    # The same calls in smaller batches (one text encoding more, 0.0002 units).
    assert abs(float(units[("lmd", "unbatched")][0]) - float(units[("lmd", "first")][0])) <= 0.01
    assert float(units[("lmd+", "move")][0]) < float(units[("lmd+", "first")][0])

    # The self-check's extra compute per image: nothing when the image is right; one object
    # re-generated twice (2 retries) costs less than both objects re-generated twice, which is
    # about two more first rounds (the overall run and every per-object run again).
    checks = {r[1]: r for r in (line.split() for line in lines) if r[:1] == ["check"] and r[1] != "mode"}
    assert list(checks) == ["lmd", "lmd+"]
    for mode, r in checks.items():
        assert r[2] == "2"
        (none, n0), (one, n1), (every, n2) = ((float(r[i]), r[i + 1]) for i in (3, 5, 7))
        assert (none, n0) == (0.0, "(0)") and n1 == n2 == "(2)"
        first = float(units[(mode, "first")][0])
        assert 0 < one < every and abs(every - 2 * first) <= 0.05 * first


def test_bench_render_on_the_shapes_models_measures_their_own_early_stop(capsys):
    argv = ["bench", "render", "--shapes", "--modes", "lmd+", "--objects", "2", "--steps", "6"]
    assert main([*argv, "--candidates", "1", "--no-follow-ups", "--no-self-check"]) == 0
    out = capsys.readouterr().out
    assert "shapes-world trained models" in out and "SAM off" in out
    (row,) = [line.split() for line in out.splitlines() if line.startswith("lmd+ ")]
    worst, best, model = (float(v) for v in row[-3:])
    # The render as configured stops guidance where the model's own loss says: between the case
    # that stops after the first pass and the one that never stops.
    assert best < worst and best <= model <= worst


def test_bench_layouts_follow_the_aspect():
    from lmd_bot.commands.bench import bench_layout
    from lmd_bot.layout.canvas import Aspect, canvas_for

    for aspect in Aspect:
        canvas = canvas_for(aspect, 512)
        layout = bench_layout(6, moved=True, canvas=canvas)
        assert (layout.width, layout.height) == (canvas.width, canvas.height)
        square = bench_layout(6, moved=True)
        for obj, ref in zip(layout.objects, square.objects, strict=True):  # the same places, scaled
            assert abs(obj.box.x / canvas.width - ref.box.x / 512) < 0.01
            assert abs(obj.box.y / canvas.height - ref.box.y / 512) < 0.01


def test_render_candidates_writes_their_grid_and_each_one(tmp_path, capsys):
    layout = tmp_path / "scene.json"
    layout.write_text(json.dumps(LAYOUT))
    out = tmp_path / "img.png"
    argv = ["render", "--layout", str(layout), "--mode", "fast", "--steps", "2", "--tiny", "--size", "128"]
    assert main([*argv, "--candidates", "4", "--seed", "3", "--out", str(out)]) == 0
    with Image.open(out) as grid:
        assert grid.size == (2 * 128 + 2, 2 * 128 + 2)  # 2x2, a 2 px gap
    for number in range(1, 5):
        with Image.open(tmp_path / f"img-{number}.png") as candidate:
            assert candidate.size == (128, 128)
    assert "candidate 1: seed 3," in capsys.readouterr().err

    assert main([*argv, "--candidates", "5", "--out", str(tmp_path / "bad.png")]) == 2
    assert "candidates" in capsys.readouterr().err and not (tmp_path / "bad.png").exists()


def test_render_refuses_outputs_it_cannot_write_before_rendering(tmp_path, capsys):
    """A folder as --out, a file where a folder should be, or two outputs on one path: one line
    before the models load (it used to render for a minute, then end in a traceback, or write
    the overlay over the image)."""
    layout = tmp_path / "scene.json"
    layout.write_text(json.dumps(LAYOUT))
    (tmp_path / "afile").write_text("")
    argv = ["render", "--layout", str(layout), "--mode", "fast", "--steps", "2", "--tiny", "--size", "128"]
    image = tmp_path / "img.png"
    cases = [
        (["--out", str(tmp_path)], f"cannot write the image to {tmp_path}: it is a folder"),
        (
            ["--out", str(tmp_path / "afile" / "img.png")],
            f"cannot write the image to {tmp_path / 'afile' / 'img.png'}: {tmp_path / 'afile'} is a file, "
            "not a folder",
        ),
        (
            ["--out", str(image), "--overlay", str(tmp_path)],
            f"cannot write the overlay to {tmp_path}: it is a folder",
        ),
        (
            ["--out", str(image), "--overlay", str(image)],
            f"the image and the overlay would both be written to {image}",
        ),
        (
            ["--out", str(image), "--candidates", "2", "--overlay", str(tmp_path / "img-2.png")],
            f"the candidate 2 and the overlay would both be written to {tmp_path / 'img-2.png'}",
        ),
    ]
    for args, message in cases:
        assert main([*argv, *args]) == 2, args
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [f"error: {message}"], args  # nothing rendered
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "scene.json"]


def test_bench_render_refuses_steps_out_of_range_in_one_line(capsys):
    """--steps 0 was a pydantic ValidationError traceback after the models were built."""
    assert main(["bench", "render", "--modes", "sd", "--steps", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --steps must be between 1 and 150"]
