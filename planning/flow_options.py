"""Each flow's options as one pydantic model parameter, and the deprecated flat parameters merged in.

A flow takes its connection blocks as separate parameters and everything else as ``options`` (a
:class:`FlowOptions` model): Prefect renders the model as a form in the UI and refuses a value that
breaks the model's JSON schema (an unknown enum value, a number out of range) before the run is
created; the model's validators (the same checks the flows ran before, raising
:class:`~stateferry.errors.InputError`) run when the run starts, before anything is read or written.

For one release a flow still takes its old flat parameters (``bucket_mirror(..., bucket="b")``):
:func:`merge_options` maps them onto the model. A field counts as given in ``options`` when its value
differs from the field's default (the UI form sends every default); a field given both ways with two
different values is an :class:`InputError`.

Pure: no I/O; the caller logs the deprecation line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from pydantic import ValidationError

from planning.config_model import ConfigModel, input_error_from
from stateferry.errors import InputError

__all__ = ["FlowOptions", "ModelOrMapping", "merge_options", "options_error"]


class FlowOptions(ConfigModel):
    """The base of every flow's options model: unknown keys refused, frozen, every field described."""


M = TypeVar("M", bound=FlowOptions)

if TYPE_CHECKING:
    #: A flow parameter typed by a model. Prefect validates a mapping into the model before the run
    #: starts, so a caller may pass either; the schema and the UI form are the model's.
    ModelOrMapping: TypeAlias = M | Mapping[str, Any]
else:

    class ModelOrMapping:
        """At run time ``ModelOrMapping[X]`` is ``X``: what Prefect builds schema and validation from."""

        def __class_getitem__(cls, model: type) -> type:
            return model


def _explicit(options: FlowOptions) -> dict[str, Any]:
    """The fields of ``options`` given with a value other than their default."""
    fields = type(options).model_fields
    out: dict[str, Any] = {}
    for name in options.model_fields_set:
        info = fields[name]
        value = getattr(options, name)
        if info.is_required() or value != info.get_default(call_default_factory=True):
            out[name] = value
    return out


def _same(flat: Any, value: Any) -> bool:
    if flat == value:
        return True
    if isinstance(flat, list | tuple) and isinstance(value, list | tuple):
        return list(flat) == list(value)
    return False


def options_error(exc: ValidationError, flat_names: set[str], docs: str) -> InputError:
    """A validation error of an options model as an InputError naming the parameter as the user gave it.

    Args:
        exc: The model's validation error.
        flat_names: Fields that came from flat parameters (named as such; the others as
            ``options.<field>``).
        docs: Where the flow's parameters are described.
    """
    err = input_error_from(exc, docs=docs)
    head = err.field.split(".", 1)[0].split("[", 1)[0]
    field = err.field if head in flat_names else f"options.{err.field}"
    return InputError(field, err.problem, err.fix)


def merge_options(
    model: type[M],
    options: M | Mapping[str, Any] | None,
    flat: Mapping[str, Any],
    *,
    docs: str,
    warn: Callable[[str], Any] | None = None,
) -> M:
    """The flow's options: ``options`` with the deprecated flat parameters mapped onto it.

    Args:
        model: The flow's options model.
        options: The ``options`` parameter (a model, its mapping, or ``None``).
        flat: The flow's parameters (e.g. ``locals()`` at the top of the flow); those named like a
            field of ``model`` and not ``None`` are flat options.
        docs: Where the parameters are described (for error messages).
        warn: Called with one deprecation line when flat options were given.

    Returns:
        The validated options.

    Raises:
        InputError: A field given both in ``options`` and as a flat parameter with different values,
            or a value the model refuses (named ``options.<field>``, or ``<field>`` when it came flat).
    """
    given = {k: v for k, v in flat.items() if k in model.model_fields and k != "options" and v is not None}
    if isinstance(options, Mapping):
        try:
            options = model.model_validate(dict(options))
        except ValidationError as exc:
            raise options_error(exc, set(), docs) from None
    if options is not None and not given:
        return options
    explicit = _explicit(options) if options is not None else {}
    for name, value in sorted(given.items()):
        if name in explicit and not _same(value, explicit[name]):
            raise InputError(
                name,
                f"is given twice: options.{name}={explicit[name]!r} and the flat parameter {name}={value!r}",
                f"give it once, as options.{name} (the flat parameter is deprecated)",
            )
    if given and warn is not None:
        names = ", ".join(sorted(given))
        warn(
            f"deprecated flat parameters: {names}; they still work in this release, but will be removed "
            f"in the next one: pass them as fields of options (options.{min(given)}=...) instead"
        )
    base = options.model_dump(exclude_unset=True) if options is not None else {}
    try:
        return model.model_validate({**base, **given})
    except ValidationError as exc:
        raise options_error(exc, set(given), docs) from None
