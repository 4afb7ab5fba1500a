"""Benchmark results: per-prompt outcomes, per-task accuracy, and the report (Markdown + JSON).

A report holds one or more *runs* (columns): the layouts of one planner, or the images of one
folder scored by one detector (OWL-ViT, OWLv2), next to the published numbers of docs/method.md
section 8. Accuracy per task is passed / evaluated; "average" is the mean of the four task
accuracies, as the paper's "Avg" column. Prompts that could not be evaluated (no recorded answer,
no image) are counted apart and said loudly, never folded silently into the accuracy.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lmd_bot.eval.prompts import Task
from lmd_bot.eval.published import PublishedRow

Stage = Literal["layouts", "images"]
AVERAGE = "average"


class ItemResult(BaseModel):
    """One prompt's outcome. ``passed`` is None when it could not be evaluated (``found`` says why)."""

    model_config = ConfigDict(frozen=True)

    index: int
    task: Task
    prompt: str
    passed: bool | None
    expected: str = ""
    found: str = ""
    source: str = ""  # which recorded answer, or which image file


class TaskScore(BaseModel):
    passed: int = 0
    evaluated: int = 0
    missing: int = 0

    @property
    def accuracy(self) -> float | None:
        return 100.0 * self.passed / self.evaluated if self.evaluated else None


class Run(BaseModel):
    """One column of results: a name ("layouts", "OWL-ViT", "OWLv2") and every prompt's outcome."""

    name: str
    items: list[ItemResult]

    def scores(self) -> dict[str, TaskScore]:
        out = {task.value: TaskScore() for task in Task}
        for item in self.items:
            score = out[item.task.value]
            if item.passed is None:
                score.missing += 1
            else:
                score.evaluated += 1
                score.passed += int(item.passed)
        return out

    def accuracies(self) -> dict[str, float | None]:
        """Per-task accuracy in percent, and the average of the tasks that were evaluated."""
        acc: dict[str, float | None] = {k: v.accuracy for k, v in self.scores().items()}
        known = [v for v in acc.values() if v is not None]
        acc[AVERAGE] = sum(known) / len(known) if len(known) == len(Task) else None
        return acc

    def failures(self) -> list[ItemResult]:
        return [item for item in self.items if item.passed is False]

    def missing(self) -> list[ItemResult]:
        return [item for item in self.items if item.passed is None]


class Report(BaseModel):
    stage: Stage
    title: str
    settings: dict[str, Any] = Field(default_factory=dict)
    runs: list[Run]
    published: list[PublishedRow] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # said under the title: warnings, comparisons
    created: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        data["accuracy"] = {run.name: run.accuracies() for run in self.runs}
        return json.dumps(data, indent=2, ensure_ascii=False)

    def to_markdown(self) -> str:
        return _markdown(self)

    def write(self, out_dir: Path) -> list[Path]:
        """Write ``report.md``, ``report.json`` and ``accuracy.png`` into ``out_dir``."""
        from lmd_bot.eval.plot import draw_accuracy_plot

        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [out_dir / "report.md", out_dir / "report.json", out_dir / "accuracy.png"]
        _write_atomic(paths[0], self.to_markdown().encode())
        _write_atomic(paths[1], self.to_json().encode())
        _write_atomic(paths[2], draw_accuracy_plot(self))
        return paths


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


_TASK_TITLES = {
    Task.NEGATION.value: "Negation",
    Task.NUMERACY.value: "Numeracy",
    Task.ATTRIBUTION.value: "Attribution",
    Task.SPATIAL.value: "Spatial",
    AVERAGE: "**Average**",
}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(report: Report) -> str:
    lines = [f"# {report.title}", "", f"Generated {report.created}.", ""]
    lines += [line for note in report.notes for line in (f"**{note}**", "")]
    if report.settings:
        lines += ["## Settings", "", "| setting | value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(str(v))} |" for k, v in report.settings.items()]
        lines.append("")

    lines += ["## Accuracy (%)", ""]
    ours = [(run.name, run.accuracies(), run.scores()) for run in report.runs]
    header = (
        ["Task"] + [f"**{name}** (ours)" for name, _, _ in ours] + [row.label for row in report.published]
    )
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, title in _TASK_TITLES.items():
        cells = [title]
        for _, acc, scores in ours:
            detail = f" ({scores[key].passed}/{scores[key].evaluated})" if key in scores else ""
            cells.append(_pct(acc[key]) + detail)
        cells += [_pct(row.value(key)) for row in report.published]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if report.published:
        lines.append(
            "Published numbers: docs/method.md, 'Published numbers' (the LMD authors' reference runs, "
            "one image per prompt, OWL-ViT B/32 at score 0.15, class-aware NMS 0.15, for images)."
        )
        lines.append("")

    for run in report.runs:
        missing = run.missing()
        if missing:
            lines += [
                f"**{run.name}: {len(missing)} of {len(run.items)} prompts were not evaluated** "
                f"(their accuracy is over the rest), e.g. #{missing[0].index}: {missing[0].found}.",
                "",
            ]

    for run in report.runs:
        failures = run.failures()
        lines += [f"## Failures: {run.name} ({len(failures)})", ""]
        if not failures:
            lines += ["None.", ""]
            continue
        lines += ["| # | task | prompt | expected | found | source |", "|---|---|---|---|---|---|"]
        for item in failures:
            cells = [
                _cell(c) for c in (str(item.index), item.task.value, item.prompt, item.expected, item.found)
            ]
            source = _cell(item.source)
            cells.append(f"[{source}](<{item.source}>)" if item.source.endswith(".png") else source)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
