"""Writing LMD-text answers that a good planner would give for a benchmark prompt."""

from lmd_bot.eval.prompts import BenchmarkPrompt, Task

_SLOTS = {  # [x, y, w, h] for an object at each place on the 512 canvas
    "left": [20, 180, 200, 200],
    "right": [290, 180, 200, 200],
    "top": [156, 20, 200, 200],
    "bottom": [156, 290, 200, 200],
}


def correct_objects(item: BenchmarkPrompt) -> list[tuple[str, list[int]]]:
    facts = item.facts
    if item.task is Task.NEGATION:
        return []
    if item.task is Task.NUMERACY:
        return [(facts.phrases[0], [10 + 100 * i, 200, 90, 90]) for i in range(facts.count)]
    if item.task is Task.ATTRIBUTION:
        return [(facts.phrases[0], _SLOTS["left"]), (facts.phrases[1], _SLOTS["right"])]
    return [(phrase, _SLOTS[loc]) for phrase, loc in zip(facts.phrases, facts.locations, strict=True)]


def lmd_text(objects, background="A realistic scene", negative=""):
    return f"{[(n, b) for n, b in objects]!r}\nBackground prompt: {background}\nNegative prompt: {negative}"


def correct_answer(item: BenchmarkPrompt) -> str:
    negative = f"{item.facts.object}s" if item.task is Task.NEGATION else ""
    return lmd_text(correct_objects(item), negative=negative)
