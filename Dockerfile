# stateferry/worker — the image of stateferry's Kubernetes work-pool runs and data-mover Jobs.
#
# Contains: Python 3.11, Prefect + prefect-kubernetes (the worker: `prefect worker start --pool ... --type kubernetes`),
# the stateferry project with its dependencies, etcdctl (etcd-client 3.4), mysqldump (mariadb-client)
# and pg_dump (postgresql-client), GNU tar (built with xattr/ACL support); archives are gzip (ISA-L). Data movers run
# `python -m stateferry.worker.volume pack|unpack ...` in it: GNU tar does the copy (owners, modes,
# times, hard links, xattrs, ACLs, sparse files, --listed-incremental deltas); Python's tarfile is
# not used for extraction (every member is checked before GNU tar sees it).
#
#   docker build -t stateferry/worker:latest .
#   docker run --rm stateferry/worker:latest python -m stateferry.worker.volume --help
#
# The image runs as an unprivileged user by default; the data-mover Jobs stateferry creates set
# their own securityContext: runAsUser 0 with all capabilities dropped except DAC_READ_SEARCH (pack,
# claim mounted read-only) or CHOWN/DAC_OVERRIDE/FOWNER/FSETID (fill), or the workload's own
# runAsUser/fsGroup (`mover_security="workload"`). See planning/mover_pod.py.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        etcd-client mariadb-client postgresql-client tar gzip ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && etcdctl version && mysqldump --version && pg_dump --version \
 && tar --version | head -1 && tar --xattrs --acls -cf /dev/null /etc/hostname

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
