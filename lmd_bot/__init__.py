"""lmd-bot: LLM-grounded Diffusion behind a Discord bot.

Importing the package has no side effects and pulls in no heavy dependency (torch, diffusers,
discord): those load lazily in the modules that need them.
"""

__version__ = "0.1.0"
