# syntax=docker/dockerfile:1
# lmd-bot in a container: the bot (default command) or, from the same image, a GPU worker for the
# Redis-backed queue (`lmd-bot worker`).
#
#   docker build -t lmd-bot .                      # CUDA build of torch (PyTorch's cu128 index)
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu -t lmd-bot:cpu .
#   docker run --gpus all --env-file .env -v lmd-data:/app/data lmd-bot
#   docker run --gpus all --env-file .env lmd-bot lmd-bot worker      # a worker host
#
# Settings come from the environment (LMD_<SECTION>__<KEY>, see config/default.toml); secrets
# (LMD_DISCORD__TOKEN, LMD_PLANNER__API_KEY, a PostgreSQL URL) belong in the --env-file, never in
# the image. /app/data holds the SQLite database, the rendered images and the model cache.

FROM python:3.11-slim AS deps
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the index of the wanted build, so no dependency pulls another one.
RUN pip install --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION"
WORKDIR /build
COPY pyproject.toml README.md ./
# Dependencies only (empty packages stand in for the source), so editing code reuses this layer.
RUN mkdir lmd_bot cogs && touch lmd_bot/__init__.py cogs/__init__.py \
    && pip install ".[scale]" && pip uninstall -y lmd-bot

FROM python:3.11-slim
RUN useradd --create-home --uid 1000 lmd
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/app/data/huggingface \
    LMD_DB__URL=sqlite+aiosqlite:////app/data/lmd-bot.sqlite3 \
    LMD_STORAGE__IMAGE_DIR=/app/data/images
WORKDIR /app
COPY --chown=lmd:lmd . .
# Editable, so config/default.toml and the assets are read from /app.
RUN pip install --no-deps -e . && mkdir -p /app/data && chown lmd:lmd /app/data
USER lmd
VOLUME /app/data
CMD ["python", "bot.py"]
