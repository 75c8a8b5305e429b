"""Structural checks that an object implements a typing.Protocol: every member, and method signatures.

`isinstance` on a runtime_checkable protocol only asks whether each name exists; this also refuses a
property implemented as a method (or the reverse) and a method whose parameters a caller could not use.
"""

from __future__ import annotations

import inspect
from typing import Any

_PLUMBING = {"Protocol", "Generic", "object"}


def protocol_members(protocol: type) -> list[str]:
    """The public names a protocol declares (its own and those of protocols it extends)."""
    names: set[str] = set()
    for base in protocol.__mro__:
        if base.__name__ in _PLUMBING:
            continue
        names |= {n for n in (*vars(base), *getattr(base, "__annotations__", {})) if not n.startswith("_")}
    return sorted(names)


def _signature_problem(wanted: inspect.Signature, found: inspect.Signature) -> str | None:
    """Why a call written against `wanted` would fail on `found` (both without `self`); None if it would not."""
    have = found.parameters
    variadic = {p.kind for p in have.values() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    for name, param in wanted.parameters.items():
        if name not in have:
            if not variadic:
                return f"has no parameter {name!r}"
            continue
        if have[name].kind != param.kind:
            return f"takes {name!r} as {have[name].kind.description}, the protocol as {param.kind.description}"
        if param.default is not param.empty and have[name].default is param.empty:
            return f"requires {name!r}, which the protocol lets callers leave out"
    extra = [
        n
        for n, p in have.items()
        if n not in wanted.parameters and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return f"requires {extra} that callers of the protocol never pass" if extra else None


def _unbound(signature: inspect.Signature) -> inspect.Signature:
    return signature.replace(parameters=list(signature.parameters.values())[1:])


def protocol_problems(obj: Any, protocol: type) -> list[str]:
    """Every way `obj` falls short of `protocol`: missing members, wrong kinds, incompatible methods."""
    problems = []
    for name in protocol_members(protocol):
        declared = inspect.getattr_static(protocol, name, None)
        if not hasattr(obj, name):
            problems.append(f"{name}: missing")
            continue
        if declared is None or isinstance(declared, property):  # a data member: any attribute or property
            if inspect.ismethod(getattr(obj, name)):
                problems.append(f"{name}: a method, but the protocol declares a value")
            continue
        implemented = inspect.getattr_static(type(obj), name, None)
        if not inspect.isfunction(implemented):
            problems.append(f"{name}: not a method")
            continue
        why = _signature_problem(_unbound(inspect.signature(declared)), _unbound(inspect.signature(implemented)))
        if why:
            problems.append(f"{name}: {why}")
    if not problems and not isinstance(obj, protocol):  # runtime_checkable protocols: the library agrees
        problems.append(f"isinstance(obj, {protocol.__name__}) is False")
    return problems


def assert_implements(obj: Any, protocol: type) -> None:
    problems = protocol_problems(obj, protocol)
    assert not problems, f"{type(obj).__name__} does not implement {protocol.__name__}: {problems}"
