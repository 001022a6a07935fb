"""What the registries of the search space share: how a name is added and how one is looked up.

Each axis of the search space has one registry, a dict from name to entry in the module that owns
the idea: `activations.ACTIVATIONS`, `stacked_optim.OPTIMIZERS`, `features.FEATURIZERS` and
`cnn.EMBEDDING_INITS`. Validation (`ChildConfig`, `Decision`, masks) and both trainers read them,
so a registered name is usable everywhere at once. An entry that needs an optional package says
so the same way in every registry (`installed`, `missing_extra`): masked while it is missing, and
named with its install command when chosen anyway.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from collections.abc import Mapping
from typing import TypeVar

Entry = TypeVar("Entry")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
"""A registered name: it becomes part of configs, cache file names and table rows."""


def add(registry: dict[str, Entry], kind: str, name: object, entry: Entry) -> None:
    """Add `entry` under `name`, refusing a malformed or taken name: a name is a config's
    identity in the feature cache and the results store, so it never silently changes meaning."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(
            f"{kind} name {name!r} is not usable; a name is letters, digits and '_.+-', "
            "starting with a letter or digit"
        )
    if name in registry:
        raise ValueError(
            f"{kind} {name!r} is already registered; pick another name "
            f"(registered: {list(registry)})"
        )
    registry[name] = entry


def known(
    registry: Mapping[str, Entry], kind: str, name: object, error: type[ValueError] = ValueError
) -> Entry:
    """The entry registered as `name`; otherwise `error` listing the registered names and the
    nearest one."""
    if isinstance(name, str) and name in registry:
        return registry[name]
    close = difflib.get_close_matches(name, list(registry), n=1) if isinstance(name, str) else []
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise error(f"{kind}={name!r} is not registered; registered: {list(registry)}.{hint}")


class MissingExtraError(ImportError):
    """An optional dependency a chosen option needs is not installed."""


Packages = str | tuple[str, ...] | None
"""The modules of the optional dependencies an option needs: one, several, or None."""


def modules(package: Packages, field: str = "package") -> tuple[str, ...]:
    """The module names `package` gives (none for None); anything else is refused, naming
    `field`."""
    names = () if package is None else (package,) if isinstance(package, str) else package
    if package is not None and not (
        isinstance(names, tuple) and names and all(n and isinstance(n, str) for n in names)
    ):
        raise ValueError(f"{field} is a module name, a tuple of them, or None, got {package!r}")
    return names


def not_installed(package: Packages) -> list[str]:
    """The modules of `package` that cannot be imported."""
    return [name for name in modules(package) if importlib.util.find_spec(name) is None]


def installed(package: Packages) -> bool:
    """Whether every module `package` names can be imported (None: nothing needed)."""
    return not not_installed(package)


def missing_extra(
    kind: str, name: str, package: Packages, install: str | None
) -> MissingExtraError:
    """The error for using option `name` of `kind` while modules of its `package` are missing;
    `install` says how to get them (default: `pip install <module>`)."""
    missing = not_installed(package) or list(modules(package))  # none missing: name them all
    command = install or f"pip install {' '.join(missing)}"
    return MissingExtraError(f"{kind} {name!r} needs the package {', '.join(missing)!r}: {command}")
