"""The planner is told the canvas and plans on it: a non-square scene, and "make it wide"."""

from lmd_bot.layout.canvas import Canvas
from lmd_bot.planner import PlanRound, prompts
from tests.planner.test_revise import ROUND1

WIDE = Canvas(512, 320)


async def test_a_new_scene_is_planned_and_repaired_on_its_canvas(claude, fake_anthropic):
    # The first answer pokes out of the 320 px high canvas: repaired on it, after one repair request.
    fake_anthropic.push_layout(
        [("a red kite", [300, 40, 120, 100]), ("a dog", [20, 200, 140, 200])], "a beach"
    )
    fake_anthropic.push_layout(
        [("a red kite", [300, 40, 120, 100]), ("a dog", [20, 160, 140, 150])], "a beach"
    )
    result = await claude.plan("a dog on a beach flying a red kite", canvas=WIDE)
    first, repair = fake_anthropic.bodies
    assert first["messages"][0]["content"] == "Canvas: 512x320\nCaption: a dog on a beach flying a red kite"
    assert "inside the 512x320 canvas" in repair["messages"][-1]["content"]
    assert (result.layout.width, result.layout.height) == (512, 320) and result.notes == []
    assert result.layout.objects[1].box.as_list() == [20, 160, 140, 150]


async def test_make_it_wide_sends_the_new_canvas_and_square_history_stays_as_it_was(claude, fake_anthropic):
    fake_anthropic.push_layout(
        [(o.caption, [o.box.x, 10, o.box.w, 300], o.id) for o in ROUND1.objects], "a room"
    )
    history = [PlanRound(instruction="a grey cat on a green sofa next to a lamp", layout=ROUND1)]
    result = await claude.revise(history, "make it wide", canvas=WIDE)
    messages = fake_anthropic.bodies[0]["messages"]
    assert messages[0]["content"] == "Caption: a grey cat on a green sofa next to a lamp"  # 512x512: no line
    assert messages[-1]["content"] == "Canvas: 512x320\nEdit: make it wide"
    assert (result.layout.width, result.layout.height) == (512, 320)
    assert [o.id for o in result.layout.objects] == [1, 2, 3]
    # The next edit stays on the scene's canvas without being told again.
    fake_anthropic.push_layout([(o.caption, o.box.as_list(), o.id) for o in result.layout.objects], "a room")
    later = await claude.revise([*history, PlanRound(instruction="make it wide", layout=result.layout)], "ok")
    messages = fake_anthropic.bodies[1]["messages"]
    assert messages[2]["content"] == "Canvas: 512x320\nEdit: make it wide"
    assert messages[-1]["content"] == "Canvas: 512x320\nEdit: ok" and later.layout.height == 320


def test_the_rules_say_how_another_canvas_is_named():
    assert '"Canvas: WxH"' in prompts.system_prompt("json", 16)
    assert prompts.caption_message("a cat") == "Caption: a cat"
