"""Typed experiment parameters and the shared validators: every bad value is refused before any data is
read or anything is computed, with one line ``error: <parameter>: <what is wrong> (got <value>)``.

A stage declares its ``params`` as a dataclass and passes it to ``ntkrepro.stage.main``::

    @dataclass
    class Params:
        depth: int = param(ge=1)
        widths: list[int] = param(min_len=2, ge=1, distinct=True)
        sigma_w2: float = param(ge=0)
        activation: str = param(check=activation)
        fit_range: list[int] = param(min_len=2, max_len=2, ge=1)

        def check(self):                          # cross-field constraints
            if self.fit_range[1] > self.depth:
                raise bad("params.fit_range", f"must lie in [1, depth={self.depth}]", self.fit_range)

        def check_config(self, cfg):              # optional: constraints that involve data.* or precision
            refuse_oversized([("data.n_train", cfg.data.n_train, 8, 2, "the training Gram (float64)")])

Types are strict: a ``bool`` is ``true``/``false`` (not "no"), an ``int`` is not a bool or "3", a
``float`` accepts ints but not strings, NaN or infinity; ``Literal[...]`` lists the accepted values;
``list[T]``, ``T | None`` and nested dataclasses (also ``list[Dataclass]``) are checked element by
element with the element's path (``params.ordered[1].sigma_w2``). Unknown keys are refused with the
accepted ones.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal

from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A config value that cannot be run; the message is one line naming the parameter."""


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def bad(path: str, what: str, value: Any) -> ConfigError:
    """The one error format: ``error: <parameter>: <what is wrong> (got <value>)``."""
    return ConfigError(f"error: {path}: {what} (got {_show(value)})")


def param(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
          le: float | None = None, lt: float | None = None, min_len: int | None = None,
          max_len: int | None = None, distinct: bool = False, check: Callable[[Any], str | None] | None = None,
          doc: str = "") -> Any:
    """A dataclass field with value constraints (bounds apply to a number or to every element of a list).
    ``check(value)`` returns None when the value is fine, else what it must be."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "min_len": min_len, "max_len": max_len,
            "distinct": distinct, "check": check, "doc": doc}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: list(d) if isinstance(d, list) else dict(d),
                                 metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ---- shared validators (return None when fine, else what the value must be) -------------------------

def activation(value) -> str | None:
    from ntkrepro.kernels import gaussian

    if not isinstance(value, str):
        return "must be an activation name"
    try:
        gaussian.get_activation(value)
    except (ValueError, TypeError):
        names = [*gaussian._FIXED, *(f"{k}:<param>" for k in gaussian._PARAMETRIC)]
        return f"must be a registered activation ({', '.join(sorted(names))})"
    return None


def dataset(value) -> str | None:
    from ntkrepro.data import REGISTRY

    return None if value in REGISTRY else f"must be a registered dataset ({', '.join(sorted(REGISTRY))})"


def increasing(value) -> str | None:
    return None if all(a < b for a, b in zip(value, value[1:], strict=False)) else "must be strictly increasing"


# ---- memory estimated before allocation ------------------------------------------------------------

def physical_memory() -> int:
    """This machine's physical memory in bytes."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g}"


_RECORDING: contextvars.ContextVar[list | None] = contextvars.ContextVar("refuse_oversized_recording", default=None)


@contextlib.contextmanager
def recording_estimates() -> Iterator[list]:
    """Within: :func:`refuse_oversized` appends its estimates to the yielded list instead of refusing (the
    memory a stage's cluster job asks for and the cost table's peak: ``ntkrepro.cost.memory_need``)."""
    found: list = []
    token = _RECORDING.set(found)
    try:
        yield found
    finally:
        _RECORDING.reset(token)


def array_bytes(value, unit: float, power: float) -> float:
    """Bytes of an array of ``unit * value ** power`` bytes (one :func:`refuse_oversized` estimate); an
    integer beyond any float is beyond any memory (inf)."""
    try:
        return float(unit) * float(value) ** power
    except OverflowError:
        return math.inf


def refuse_oversized(estimates, *, memory: int | None = None) -> None:
    """Refuse, in one line naming the parameter and before any data or compute, the first array that
    would need more than this machine's memory. ``estimates``: ``(path, value, unit_bytes, power, what)``
    for an array of ``unit_bytes * value ** power`` bytes driven by the parameter at ``path``; the message
    gives the estimate and the largest value that would fit. A config that passes can still exhaust
    memory (a computation keeps several arrays): this catches the absurd ones."""
    found = _RECORDING.get()
    if found is not None:
        found.extend(estimates)
        return
    memory = physical_memory() if memory is None else memory
    for path, value, unit, power, what in estimates:
        need = array_bytes(value, unit, power)
        if need > memory:
            fits = max(int((memory / unit) ** (1.0 / power)), 0)
            raise bad(path, f"{what} would need ~{_gib(need)} GiB, more than this machine's "
                      f"{_gib(memory)} GiB of memory (at most {fits} would fit)", value)


# ---- the checker -------------------------------------------------------------------------------------

def _plain(value):
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(inner)}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _check_type(path: str, value, tp, hints_ns) -> Any:
    """Check ``value`` against type ``tp``; return the value (nested dataclasses built)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(path, value, arg, hints_ns)
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if len(errors) == 1 else bad(path, f"must be {_type_name(tp)}", value)
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in typing.get_args(tp)):
            raise bad(path, f"must be {_type_name(tp)}", value)
        return value
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise bad(path, f"must be {_type_name(tp)}", value)
        return [_check_type(f"{path}[{i}]", v, inner, hints_ns) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad(path, "must be a mapping", value)
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad(path, f"must be {_type_name(tp)}", value)
        return build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad(path, "must be true or false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(path, "must be an integer", value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad(path, "must be a finite number", value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad(path, "must be a string", value)
        return value
    raise TypeError(f"{path}: unsupported schema type {tp!r}")


def _check_meta(path: str, value, meta: dict) -> None:
    if value is None:
        return
    items = value if isinstance(value, list) else [value]
    nums = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for op, test, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                           ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        bound = meta.get(op)
        if bound is not None and not all(test(v, bound) for v in nums):
            what = f"every value must be {word} {bound:g}" if isinstance(value, list) else f"must be {word} {bound:g}"
            raise bad(path, what, value)
    if isinstance(value, list):
        if meta.get("min_len") is not None and len(value) < meta["min_len"]:
            raise bad(path, f"needs at least {meta['min_len']} value(s)", value)
        if meta.get("max_len") is not None and len(value) > meta["max_len"]:
            raise bad(path, f"takes at most {meta['max_len']} value(s)", value)
        if meta.get("distinct") and len({repr(v) for v in value}) < len(value):
            raise bad(path, "values must be distinct", value)
    if meta.get("check") is not None:
        what = meta["check"](value)
        if what:
            raise bad(path, what, value)


def build(schema: type, values, path: str = "params"):
    """Check ``values`` (a mapping, DictConfig included) against dataclass ``schema``; return the instance
    (its ``check()`` run). Raises :class:`ConfigError` with one line on the first bad value."""
    values = _plain(values)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise bad(path, "must be a mapping", values)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise bad(f"{path}.{unknown[0]}", f"unknown parameter (accepted: {', '.join(fields)})", values[unknown[0]])
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for name, f in fields.items():
        sub = f"{path}.{name}"
        if name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise bad(sub, "is required", None)
            continue
        value = _check_type(sub, values[name], hints[name], None)
        _check_meta(sub, value, dict(f.metadata))
        kwargs[name] = value
    instance = schema(**kwargs)
    if hasattr(instance, "check"):
        instance.check()
    return instance


# ---- array inputs of the public API --------------------------------------------------------------------

def real_array(name: str, x):
    """``x`` as a numpy array of real numbers: complex, string, object and boolean arrays are refused in
    one line (a complex input would otherwise lose its imaginary part silently). Traced JAX arrays pass."""
    import jax
    import numpy as np

    if isinstance(x, jax.core.Tracer):
        return x
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} is not an array of numbers ({err})") from None
    if a.dtype.kind == "c":
        raise ValueError(f"{name} is complex ({a.dtype}); the kernels are defined for real inputs: pass x.real "
                         "or stack real and imaginary parts as features")
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}")
    return a


def finite_kernel(name: str, k, *inputs) -> None:
    """Refuse a kernel with non-finite entries, naming the input scale that caused it (overflow)."""
    import jax
    import numpy as np

    if isinstance(k, jax.core.Tracer) or bool(np.all(np.isfinite(np.asarray(k)))):
        return
    with np.errstate(over="ignore"):  # the norm itself may overflow: it is then reported as inf
        norms = [float(np.max(np.sum(np.asarray(x, dtype=np.float64).reshape(len(x), -1) ** 2, axis=1)))
                 for x in inputs if x is not None and not isinstance(x, jax.core.Tracer)]
    scale = f"largest squared input norm {max(norms):.3g}" if norms else "the inputs"
    raise ValueError(f"{name} has non-finite entries: it overflowed in its dtype at {scale}; rescale the "
                     "inputs (e.g. to unit norm) or use float64")


def symmetric(name: str, k, *, rtol: float | None = None) -> None:
    """Refuse a training Gram that is not symmetric: max |K - K^T| > rtol * max |K| (rtol 1e-10 in
    float64, 1e-4 in float32: the rounding of a Gram built from two orders of summation)."""
    import jax
    import numpy as np

    if isinstance(k, jax.core.Tracer):
        return
    a = np.asarray(k)
    tol = rtol if rtol is not None else (1e-4 if a.dtype == np.float32 else 1e-10)
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    gap = float(np.max(np.abs(a - a.T))) if a.size else 0.0
    if gap > tol * scale:
        raise ValueError(f"{name} is not symmetric (max |K - K^T| = {gap:.3g} > {tol:g} x max |K| = "
                         f"{tol * scale:.3g}); it must be the Gram K(X, X) of the training inputs")
