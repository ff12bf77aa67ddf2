"""stateferry: Prefect 3 workflows that move and protect stateful services on Kubernetes."""

__version__ = "0.1.0"
