"""The stateferry error taxonomy and the ONE place that classifies client-library errors.

Every step decides whether to retry by asking :func:`is_transient`; every task that talks to a
server converts what the client library raised with :func:`translate`, so the messages users see say
what was expected, what was found and what to do, never a deep client stack trace.

Import every name from here (``from stateferry.errors import InputError``). The package is laid out as:

- :mod:`~stateferry.errors.taxonomy`: the exception classes;
- :mod:`~stateferry.errors.classify`: :func:`translate` and :func:`is_transient`, which run the
  classifiers of :mod:`~stateferry.errors.kube`, :mod:`~stateferry.errors.s3`,
  :mod:`~stateferry.errors.etcd`, :mod:`~stateferry.errors.connections` and
  :mod:`~stateferry.errors.databases` (sharing :mod:`~stateferry.errors.matching`).

Client libraries are never imported here: an exception of, say, ``kubernetes.client.ApiException``
can only exist if ``kubernetes`` is already imported, so the classifiers look the classes up in
:data:`sys.modules`. Importing this package is therefore cheap.
"""

from __future__ import annotations

from stateferry.errors.classify import is_transient, translate
from stateferry.errors.taxonomy import (
    Conflict,
    FieldCause,
    InputError,
    Invalid,
    NotFound,
    PermanentError,
    PreconditionFailed,
    StateferryError,
    TransientError,
)

__all__ = [
    "Conflict",
    "FieldCause",
    "InputError",
    "Invalid",
    "NotFound",
    "PermanentError",
    "PreconditionFailed",
    "StateferryError",
    "TransientError",
    "is_transient",
    "translate",
]
