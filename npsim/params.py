"""Parameter sets: the one place a component's settings are typed and checked.

Every component with settings (node models, noise models, layers, the
spiking simulation, learning rules) is a :class:`Params`: a frozen, strict
pydantic model. Its fields carry the types and ranges below, so a setting is
checked once, where the component defines it; configs embed these models or
pass their tables to them (see docs/design.md §6). Strict means no silent
coercion: ``True`` is not a number, ``"3"`` is not an integer.

A bad argument raises :class:`~npsim.errors.ParameterError` (a ``ValueError``)
naming the component, the parameter, the problem and the value::

    >>> LeakyReLU(slope=2)
    ParameterError: leaky_relu: slope must be less than 1 (got 2)
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ParameterError

__all__ = [
    "Params", "PositiveInt", "NonNegativeInt", "PositiveFloat", "NonNegativeFloat", "FiniteFloat", "Probability",
    "Fraction", "parameter_error", "problem_text",
]

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]  # [0, 1): momenta, Adam's betas, leaks


def problem_text(err: dict) -> str:
    """A pydantic error entry as a short phrase: "must be greater than 0", "is not a parameter"."""
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "is not a parameter"
    if kind == "missing":
        return "is required"
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    msg = re.sub(r"^(Input|String|Value|List|Tuple|Dictionary|Data) should ", "must ", msg)
    return re.sub(r"^Input is not", "is not", msg)


def parameter_error(component: str, exc: ValidationError, fields=()) -> ParameterError:
    """The first problem of a pydantic ``ValidationError`` as a one-line :class:`ParameterError`."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a misspelt name first
    loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    param = ".".join(loc)
    problem = problem_text(err)
    if err["type"] == "extra_forbidden":
        problem += f"; {component} takes {', '.join(fields)}" if fields else f"; {component} takes no parameters"
    value = err.get("input")
    show = err["type"] not in ("missing", "extra_forbidden") and not isinstance(value, (dict, BaseModel))
    return ParameterError(component, param, problem, value, show_value=show)


class _ParamsMeta(type(BaseModel)):
    """Calling a parameter set's class: positional fields, and one-line errors.

    Done in the metaclass, not in ``__init__``, so that pydantic validates a
    parameter set nested in a config the usual way (an overridden ``__init__``
    would be called there too, and its errors would lose their location).
    """

    def __call__(cls, *args: Any, **kwargs: Any):
        if args:
            names = list(cls.positional or cls.model_fields)
            if len(args) > len(names):
                raise TypeError(f"{cls._component()}() takes at most {len(names)} positional arguments "
                                f"({', '.join(names)}), got {len(args)}")
            for name, value in zip(names, args):
                if name in kwargs:
                    raise TypeError(f"{cls._component()}() got two values for {name!r}")
                kwargs[name] = value
        try:
            return super().__call__(**kwargs)
        except ValidationError as exc:
            raise parameter_error(cls._component(), exc, tuple(cls.model_fields)) from None


class Params(BaseModel, metaclass=_ParamsMeta):
    """Base of every component's parameter set: frozen, no unknown keys, no coercion.

    Fields may be given by keyword or by position (``Dense(784, 256, node)``),
    in field order or in the order ``positional`` names. ``component`` names
    the component in errors.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, arbitrary_types_allowed=True)
    component: ClassVar[str] = ""
    positional: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _component(cls) -> str:
        if cls.component:
            return cls.component
        name = getattr(cls, "name", None)  # node models and rules name themselves with a class variable
        return name if isinstance(name, str) else cls.__name__

    def replace(self, **changes):
        """A copy with ``changes`` applied and validated (``dataclasses.replace`` for parameter sets)."""
        return type(self)(**{**{k: getattr(self, k) for k in type(self).model_fields}, **changes})

    def describe(self) -> str:
        """``name(field=value, ...)`` for logs and file attributes."""
        shown = ", ".join(f"{k}={getattr(self, k)!r}" for k, f in type(self).model_fields.items() if f.repr)
        return f"{self._component()}({shown})"
