"""Registries: the names configs use for node models, rules, losses, optimizers and data sets.

A :class:`Registry` is an explicit, read-only table built where its entries
are defined; nothing registers itself as a side effect of being imported.
Lookups are case-insensitive, accept aliases, and accept old names for one
release with a ``FutureWarning`` that gives the new name.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Name -> entry, e.g. ``Registry("node model", {"relu": ReLU}, aliases={"step": "heaviside"})``.

    what : what the entries are, for messages ("node model", "rule").
    entries : canonical name -> entry.
    aliases : other accepted spellings -> canonical name.
    renamed : old names -> new canonical name; looking one up warns once per call site.

    Iterating, ``len`` and ``in`` see the canonical names only; :meth:`lookup`
    and :meth:`canonical` also resolve aliases and old names.
    """

    def __init__(self, what: str, entries: Mapping[str, T], *, aliases: Mapping[str, str] | None = None,
                 renamed: Mapping[str, str] | None = None):
        self.what = what
        self._entries = {k.lower(): v for k, v in entries.items()}
        self._aliases = {k.lower(): v.lower() for k, v in (aliases or {}).items()}
        self._renamed = {k.lower(): v.lower() for k, v in (renamed or {}).items()}
        for table in (self._aliases, self._renamed):
            bad = [k for k, v in table.items() if v not in self._entries]
            if bad:
                raise ValueError(f"{what} registry: {bad[0]!r} points to no entry")

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, *, aliases: bool = False) -> list[str]:
        """The canonical names (and, with ``aliases``, the aliases too), sorted."""
        return sorted(list(self._entries) + (list(self._aliases) if aliases else []))

    def canonical(self, name) -> str:
        """The canonical name of ``name``; ValueError listing the known names if there is none."""
        key = name.strip().lower() if isinstance(name, str) else None
        if key in self._entries:
            return key
        if key in self._aliases:
            return self._aliases[key]
        if key in self._renamed:
            new = self._renamed[key]
            warnings.warn(f"{self.what} {name!r} is now called {new!r}; the old name will be removed in the "
                          f"next release", FutureWarning, stacklevel=3)
            return new
        raise ValueError(f"unknown {self.what} {name!r}; known {self.what}s: {', '.join(self.names(aliases=True))}")

    def lookup(self, name) -> T:
        """The entry called ``name`` (canonical, alias or old name)."""
        return self._entries[self.canonical(name)]

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self.names())})"
