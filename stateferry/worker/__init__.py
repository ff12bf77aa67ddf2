"""Code run inside the ``stateferry/worker`` image (data-mover Jobs); see :mod:`stateferry.worker.volume`."""
