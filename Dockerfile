# syntax=docker/dockerfile:1
# Bouncer image: one image, three roles — `web` (default), `worker`, `beat` — chosen by the command.
ARG PYTHON_VERSION=3.11

# -- build: the project's wheel and every dependency's wheel ------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY workers ./workers
COPY classifiers ./classifiers
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels .

# -- runtime: slim Python, a venv installed from those wheels only, no compilers, no sources --------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
# GUNICORN_CMD_ARGS: worker heartbeat files on tmpfs, since a container's overlay filesystem can stall them.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/bouncer/bin:$PATH \
    BOUNCER_DATA_DIR=/data \
    BOUNCER_MODELS_DIR=/models \
    BOUNCER_BIND=0.0.0.0:8000 \
    GUNICORN_CMD_ARGS="--worker-tmp-dir /dev/shm"
RUN groupadd --system --gid 10001 bouncer \
 && useradd --system --uid 10001 --gid bouncer --home-dir /data --no-create-home --shell /usr/sbin/nologin bouncer \
 && mkdir -p /data /models \
 && chown bouncer:bouncer /data /models
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/bouncer \
 && /opt/bouncer/bin/pip install --no-cache-dir --no-index --find-links=/wheels bouncer
USER bouncer
WORKDIR /data
# New named volumes start with the ownership above, so the non-root user can write to them.
VOLUME ["/data", "/models"]
EXPOSE 8000
# `bouncer web` replaces itself with gunicorn, so gunicorn receives the container's SIGTERM directly.
ENTRYPOINT ["bouncer"]
CMD ["web"]
