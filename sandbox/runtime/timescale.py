"""One knob that scales the kubelet's waiting times (probe delays/periods, restart backoff) for tests."""

from __future__ import annotations

import os

TIME_SCALE_ENV = "STATEFERRY_SANDBOX_TIME_SCALE"


def time_scale() -> float:
    """Return the factor applied to probe ``initialDelaySeconds``/``periodSeconds`` and restart backoff.

    Read from the environment variable ``STATEFERRY_SANDBOX_TIME_SCALE`` (default ``1.0`` = real
    Kubernetes timings; tests use e.g. ``0.1``). Values are clamped to ``[0.01, 10]``.
    """
    raw = os.environ.get(TIME_SCALE_ENV, "1")
    try:
        value = float(raw)
    except ValueError:
        return 1.0
    return min(10.0, max(0.01, value))


def scaled(seconds: float) -> float:
    """Scale a kubelet delay by :func:`time_scale`."""
    return seconds * time_scale()
