# imtext image: the project with its pinned dependencies. One image serves every role in
# docker-compose.yml: Prefect server, setup, CPU worker and GPU worker.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    PREFECT_HOME=/data/prefect \
    IMTEXT_HOME=/data \
    HF_HOME=/data/hf

RUN useradd --create-home --uid 1000 imtext \
    && mkdir -p /app /data \
    && chown imtext:imtext /app /data
WORKDIR /app

# torch first, on its exact pin: the PyPI Linux wheel brings the CUDA libraries the GPU worker uses.
RUN pip install torch==2.13.0

# Dependencies before the code, so that editing the code does not reinstall them: install the
# project against empty package folders, then copy the real ones over (the install is editable).
COPY pyproject.toml README.md* ./
RUN mkdir -p flows tasks expectations warehouse \
    && for p in flows tasks expectations warehouse; do touch "$p/__init__.py"; done \
    && pip install -e . \
    && rm -rf flows tasks expectations warehouse
COPY --chown=imtext:imtext . .

USER imtext
VOLUME ["/data"]
EXPOSE 4200
CMD ["imtext", "--help"]
