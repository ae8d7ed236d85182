"""The pieces a recipe is composed of, and their one catalogue: every subclass of a kind's
base class is a choice of params.yaml, known by its `name`.

`Activation`, `Norm`, `Optimizer` and `Init` are the types a schema field takes: params.yaml
writes a piece as its name alone, or as a mapping of its name and params (an init also in
short: a number, or {name: params}), and pydantic picks the class by the name.
"""

from typing import Annotated, Union

from pydantic import BeforeValidator, Field

from . import activations, inits, norms, optimizers


def choices(base):
    """{name: class} of every piece of a kind, in the order its module defines them."""
    return {cls.model_fields["name"].default: cls for cls in base.__subclasses__()}


def _catalogue(base, short=None):
    """The schema type of a kind: a union of its pieces, told apart by name."""

    def named(value):
        if isinstance(value, str):
            return {"name": value}
        return short(value) if short else value

    members = tuple(choices(base).values())
    return Annotated[Union[members], Field(discriminator="name"), BeforeValidator(named)]  # noqa: UP007


def _init_short(value):
    """An init in short as a mapping with its name: a number is randn × number, {name: params}
    or {name: value} the scheme with those params, or that value."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"name": "randn", "scale": float(value)}
    if isinstance(value, dict) and len(value) == 1 and "name" not in value:
        ((name, arg),) = value.items()
        return {"name": name, **(arg if isinstance(arg, dict) else {"value": arg})}
    if not isinstance(value, dict):
        raise ValueError(
            "expected a number (randn × number), kaiming, xavier, zeros or {scheme: params} "
            f"such as {{kaiming: {{gain: 1.41}}}} or {{constant: 0.1}}, got {value!r}"
        )
    return value


Activation = _catalogue(activations.Activation)
Norm = _catalogue(norms.Norm)
Optimizer = _catalogue(optimizers.Optimizer)
Init = _catalogue(inits.Init, _init_short)
