# syntax=docker/dockerfile:1
# lmd-bot in containers, two images from one file (docker-compose.yml builds both):
#
#   docker build --target bot -t lmd-bot:bot .        # the bot: Discord, planner, database, Redis
#                                                      # queue; no GPU stack (queue.backend = "redis")
#   docker build --target worker -t lmd-bot:worker .  # a GPU worker: CUDA torch (PyTorch's cu128
#                                                      # index) and the models' cache in /models
#   docker build --target worker --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu \
#       -t lmd-bot:worker-cpu .                         # the same worker on the CPU
#
# Settings come from the environment (LMD_<SECTION>__<KEY>, see config/default.toml); secrets
# (LMD_DISCORD__TOKEN, LMD_PLANNER__API_KEY, the PostgreSQL password) belong in .env, never in an
# image. Both images install the package from a wheel (not editable): the defaults and the
# database migrations travel inside it.

FROM python:3.11-slim AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md bot.py ./
COPY config config
COPY lmd_bot lmd_bot
COPY cogs cogs
RUN pip wheel --no-deps --wheel-dir /dist .

FROM python:3.11-slim AS runtime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
    && useradd --create-home --uid 1000 --user-group lmd \
    && mkdir -p /app/data /models \
    && chown lmd:lmd /app/data /models
WORKDIR /app

FROM runtime AS bot
ENV LMD_DB__URL=sqlite+aiosqlite:////app/data/lmd-bot.sqlite3 \
    LMD_STORAGE__IMAGE_DIR=/app/data/images
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install "$(ls /dist/lmd_bot-*.whl)[scale]"
USER 1000:1000
VOLUME /app/data
CMD ["lmd-bot", "run"]

FROM runtime AS worker
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV HF_HOME=/models
# torch first, from the index of the wanted build, so no dependency pulls another one.
RUN pip install --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION"
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install "$(ls /dist/lmd_bot-*.whl)[render,scale]"
USER 1000:1000
VOLUME /models
CMD ["lmd-bot", "worker"]
