"""Kubeconfig files for the sandbox clusters."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def write_kubeconfig(path: Path, clusters: dict[str, str]) -> None:
    """Write a kubeconfig with one cluster, user and context per entry of ``clusters``.

    Args:
        path: File to write (parent directories are created; written atomically, mode 0600).
        clusters: Context name -> API server URL, e.g. ``{"source": "http://127.1.0.1:6443"}``.
            The first entry becomes the current context.
    """
    names = list(clusters)
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": n, "cluster": {"server": clusters[n]}} for n in names],
        "users": [{"name": f"{n}-admin", "user": {}} for n in names],
        "contexts": [
            {"name": n, "context": {"cluster": n, "user": f"{n}-admin", "namespace": "default"}}
            for n in names
        ],
        "current-context": names[0] if names else "",
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
