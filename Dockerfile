# The testfleet image for deploy/k8s: one image, two roles (the manifests run
# `testfleet coordinator` or `testfleet worker`). Not built in this project's
# CI: its machines have no Docker engine. Build it with
#   docker build -t testfleet:0.1.0 .
# The bench extra (torch, transformers) is left out: a worker without it runs
# test and command tasks and does not advertise benchmarks; build a GPU image
# FROM this one with the torch build that fits its accelerator.

# Stage 1: build the wheel from the source tree (setuptools, as pyproject says).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir build==1.2.2 && python -m build --wheel --outdir /wheels

# Stage 2: only the installed package; no compiler, no source tree.
FROM python:3.11-slim
COPY --from=build /wheels /wheels
# The postgres extra (psycopg, DuckDB's postgres extension) is in: the ha
# overlay's coordinators keep their state in PostgreSQL.
RUN pip install --no-cache-dir "$(ls /wheels/*.whl)[postgres]" && rm -rf /wheels \
    # A fixed, non-root uid: the manifests' runAsUser and fsGroup name it.
    && groupadd --gid 10001 testfleet \
    && useradd --uid 10001 --gid 10001 --home-dir /home/testfleet --create-home testfleet
# Python writes no bytecode at run time (the root filesystem is read-only in
# the manifests) and prints logs at once (kubectl logs).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/testfleet
EXPOSE 8700
ENTRYPOINT ["testfleet"]
CMD ["--help"]
