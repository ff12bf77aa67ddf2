"""Field checks shared by the flows' options models, as pydantic ``AfterValidator`` annotations.

``Annotated[str, checked(check)]`` runs ``check(value, field_name=<the field>)`` on a given value
and keeps the value; an :class:`~stateferry.errors.InputError` it raises is the field's error. An
after-validator leaves the field's JSON schema (the Prefect UI form) as the plain type's, and
``Annotated[str, checked(check)] | None`` lets ``None`` through unchecked.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import AfterValidator, ValidationInfo

from stateferry.errors import InputError

__all__ = ["FieldCheck", "checked"]


class FieldCheck(Protocol):
    """A check of one text value, naming ``field_name`` in its error."""

    def __call__(self, value: str, /, *, field_name: str) -> object:
        """Raise InputError (or ValueError) when ``value`` is refused; the result is ignored."""


def checked(check: FieldCheck, fix: str | None = None) -> AfterValidator:
    """An after-validator running ``check`` on the field's value, named after the field.

    Args:
        check: Called as ``check(value, field_name=<field name>)``.
        fix: With a check that raises a plain ``ValueError``: the fix of the InputError it becomes
            (its message is the problem). Without it, only InputError is expected.

    Returns:
        The validator, for ``Annotated[str, checked(...)]``.
    """

    def validate(value: str, info: ValidationInfo) -> str:
        name = str(info.field_name)
        try:
            check(value, field_name=name)
        except ValueError as exc:
            if fix is None or isinstance(exc, InputError):
                raise
            raise InputError(name, str(exc), fix) from None
        return value

    return AfterValidator(validate)
