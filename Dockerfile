# stateferry/worker — the image of stateferry's Kubernetes work-pool runs and data-mover Jobs.
#
# Contains: Python 3.11, Prefect + prefect-kubernetes (the worker: `prefect worker start --pool ... --type kubernetes`),
# the stateferry project with its dependencies, etcdctl (etcd-client 3.4), mysqldump (mariadb-client)
# and pg_dump (postgresql-client), tar/gzip. Data movers run
# `python -m stateferry.worker.volume pack|unpack ...` in it.
#
#   docker build -t stateferry/worker:latest .
#   docker run --rm stateferry/worker:latest python -m stateferry.worker.volume --help
#
# The image runs as an unprivileged user by default; data-mover Jobs that must read files owned by
# other users set `securityContext.runAsUser: 0` in their pod spec (see
# deployments/kubernetes-work-pool.md).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        etcd-client mariadb-client postgresql-client tar gzip ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && etcdctl version && mysqldump --version && pg_dump --version

WORKDIR /opt/stateferry
# Dependencies first (cached layer), then the code.
COPY pyproject.toml README.md ./
RUN mkdir -p stateferry && touch stateferry/__init__.py \
 && pip install . "prefect-kubernetes>=0.6" && pip uninstall -y stateferry && rm -rf stateferry
COPY blocks/ blocks/
COPY planning/ planning/
COPY tasks/ tasks/
COPY flows/ flows/
COPY deployments/ deployments/
COPY stateferry/ stateferry/
RUN pip install --no-deps . \
 && python -c "import flows.resource_backup, flows.app_migration, stateferry.worker.volume"

RUN useradd --uid 10001 --create-home stateferry
USER 10001
# Prefect's Kubernetes worker runs flow code from this directory (entrypoints are relative paths).
WORKDIR /opt/stateferry
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["prefect", "worker", "start", "--pool", "stateferry-k8s", "--type", "kubernetes"]
