"""stateferry tasks layer: Prefect tasks doing I/O (small, retryable, idempotent ``ensure_*`` steps).

Shared plumbing: :mod:`tasks.retry` (retry transient errors only) and :mod:`tasks.approvals`
(human approval of a plan through a paused flow run).
"""
