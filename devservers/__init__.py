"""Launchers of real local servers (etcd, S3, MariaDB, PostgreSQL, Prefect) for tests, demo and benchmarks.

Every launcher binds to loopback only, on free ports, with its own data directory, and cleans up every
process it started (process groups are killed on ``stop()``).
"""
