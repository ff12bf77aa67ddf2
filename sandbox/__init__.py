"""The local two-cluster Kubernetes sandbox (``source`` and ``target`` on loopback).

Public entry points: :class:`sandbox.cluster.Sandbox` (up / down / status),
:func:`sandbox.testing.running_sandbox` (tests) and :func:`sandbox.podexec.exec_in_pod`.
"""
