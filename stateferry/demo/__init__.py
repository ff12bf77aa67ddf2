"""The local demo (``stateferry demo`` / ``scripts/demo``).

:mod:`~stateferry.demo.runner` brings it up and down; :mod:`~stateferry.demo.clusters` prepares the
Kubernetes side, :mod:`~stateferry.demo.prefect_setup` the Prefect side, and
:mod:`~stateferry.demo.scenarios` deploys and triggers one flow's demo.
"""


def say(msg: str) -> None:
    """Progress line for the person running the demo."""
    print(f"[demo] {msg}", flush=True)
