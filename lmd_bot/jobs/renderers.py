"""Which renderer the GPU worker process builds, described so it can cross a process boundary.

A :class:`RendererSpec` names factories as ``"module:function"`` strings with keyword arguments;
the worker process imports and calls them, so the bot process never imports torch or diffusers.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lmd_bot.config import Settings
from lmd_bot.errors import ConfigError
from lmd_bot.rendering import Renderer
from lmd_bot.safety import SafetyChecker


def _top_level(body: list[ast.stmt]):
    """The module's statements, including those under a top-level ``if``, ``try`` or ``with``."""
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.Try | ast.With):
            for block in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                yield from _top_level(block)
            for handler in getattr(node, "handlers", []):
                yield from _top_level(handler.body)


def check_factory(path: str, what: str) -> None:
    """Fail at start-up, not in the worker, when ``path`` ("module:function") cannot be found.

    The module is located without being run (the bot process must not load torch through it);
    where its source can be read, it must define the name at top level.
    """
    module_name, _, attr = path.partition(":")
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):  # a parent package is missing
        spec = None
    if spec is None:
        raise ConfigError(f"{what}: there is no module {module_name!r} (from {path!r})")
    try:
        source = spec.loader.get_source(module_name) if spec.loader else None
    except (ImportError, OSError):
        source = None
    if source is None:
        return
    names: set[str] = set()
    for node in _top_level(ast.parse(source).body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    if attr not in names and "__getattr__" not in names:  # a module __getattr__ provides anything
        raise ConfigError(f"{what}: module {module_name!r} has no {attr!r} (from {path!r})")


def _import(path: str, what: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{what} must look like 'package.module:function', got {path!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{what}: cannot import {path!r}: {exc}") from exc


class RendererSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    factory: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    safety_checker: str = ""  # "module:function" returning an object with check(image) -> bool
    safety_kwargs: dict[str, Any] = Field(default_factory=dict)
    log_level: str = "INFO"

    def load_renderer(self) -> Renderer:
        return _import(self.factory, "renderer factory")(**self.kwargs)

    def load_checker(self) -> SafetyChecker | None:
        if not self.safety_checker:
            return None
        return _import(self.safety_checker, "guard.safety_checker")(**self.safety_kwargs)


def diffusion_renderer(diffusion: dict[str, Any], tiny: bool = False) -> Renderer:
    """The real LMD controller (or, with ``tiny``, the same code on tiny random-weight models, which
    draw nothing a detector could check: no self-check)."""
    from lmd_bot.config import DiffusionSettings
    from lmd_bot.diffusion.renderer import build_renderer

    settings = DiffusionSettings.model_validate(diffusion)
    return build_renderer(settings, tiny=tiny, check=not tiny)


def preview_renderer() -> Renderer:
    from lmd_bot.jobs.preview import PreviewRenderer

    return PreviewRenderer()


def renderer_spec(settings: Settings) -> RendererSpec:
    """The worker's renderer as the settings ask (``queue.renderer``)."""
    safety = {}
    if settings.guard.safety_checker:
        check_factory(settings.guard.safety_checker, "guard.safety_checker (LMD_GUARD__SAFETY_CHECKER)")
        safety = {"model": settings.guard.safety_model, "device": settings.diffusion.device}
    common = {
        "safety_checker": settings.guard.safety_checker,
        "safety_kwargs": safety,
        "log_level": settings.log_level,
    }
    if settings.queue.renderer == "preview":
        return RendererSpec(factory="lmd_bot.jobs.renderers:preview_renderer", **common)
    return RendererSpec(
        factory="lmd_bot.jobs.renderers:diffusion_renderer",
        kwargs={
            "diffusion": settings.diffusion.model_dump(mode="json"),
            "tiny": settings.queue.renderer == "tiny",
        },
        **common,
    )
