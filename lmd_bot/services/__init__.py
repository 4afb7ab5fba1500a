"""The service layer: the bot's use cases, free of Discord. Cogs, the terminal chat and the tests
drive the same :class:`SceneService`."""

from lmd_bot.services.app import Core, open_core
from lmd_bot.services.candidates import CandidateService
from lmd_bot.services.layout_files import AttachedFile
from lmd_bot.services.notifier import DestinationGoneError, Notifier, Presenter
from lmd_bot.services.refining import RefineService
from lmd_bot.services.scenes import SceneService
from lmd_bot.services.views import (
    Actor,
    FailureView,
    JobSummary,
    LayoutView,
    PlanShown,
    PlanView,
    QueueEntry,
    QueueView,
    ReplyView,
    ResultView,
    SettingsChange,
    SettingsView,
    StatusView,
    UndoView,
    Voice,
)

__all__ = [
    "Actor",
    "AttachedFile",
    "CandidateService",
    "Core",
    "DestinationGoneError",
    "FailureView",
    "JobSummary",
    "LayoutView",
    "Notifier",
    "PlanShown",
    "PlanView",
    "Presenter",
    "QueueEntry",
    "QueueView",
    "RefineService",
    "ReplyView",
    "ResultView",
    "SceneService",
    "SettingsChange",
    "SettingsView",
    "StatusView",
    "UndoView",
    "Voice",
    "open_core",
]
