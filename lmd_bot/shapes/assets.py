"""Where the committed shapes models live, and the settings that point the renderer at them."""

from __future__ import annotations

from pathlib import Path

from lmd_bot.config import DiffusionSettings
from lmd_bot.errors import LmdError
from lmd_bot.shapes.world import IMAGE_SIZE

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapes"


def shapes_diffusion_settings(base: DiffusionSettings, weights: Path = WEIGHTS_DIR) -> DiffusionSettings:
    """``base`` with the shapes models: their SD and GLIGEN folders, 64 px, masks from attention
    (no SAM: there is none for this world), checked by the world's own detector. The same as
    setting ``LMD_DIFFUSION__SD_MODEL``, ``__GLIGEN_MODEL``, ``__USE_SAM=false``, ``__SIZE=64`` and
    ``__CHECK_DETECTOR=shapes``. A folder that is no export is refused here, by the name the user
    gave it (``--weights``): the model loader would name diffusion.sd_model and the model hub."""
    if not (weights / "sd").is_dir():
        raise LmdError(f"{weights} has no sd/ folder: point --weights at an export (lmd-bot shapes export)")
    return base.model_validate(
        {
            **base.model_dump(),
            "sd_model": str(weights / "sd"),
            "gligen_model": str(weights / "gligen"),
            "use_sam": False,
            "size": IMAGE_SIZE,
            "check_detector": "shapes",
        }
    )
