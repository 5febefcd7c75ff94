"""Registries of kinds: a space, strategy or baseline registers its job-file spec under its name, and the job schema
assembles its tagged unions from them, so adding a kind edits no table elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar, Union

from pydantic import Discriminator, Tag

from paretopress.kernel.errors import UserError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Spec classes by name; ``tag`` is the job-file key that names the kind, ``default`` the kind when it is left out.

    Each spec class declares its name as a ``Literal`` of its ``tag`` field, so pydantic checks it too.
    """

    def __init__(self, what: str, tag: str = "kind", default: str | None = None) -> None:
        self.what, self.tag, self.default = what, tag, default
        self._kinds: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(cls: T) -> T:
            if name in self._kinds:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._kinds[name] = cls
            return cls
        return add

    def __getitem__(self, name: str) -> T:
        if name not in self._kinds:
            raise UserError(f"unknown {self.what} {name!r}; expected one of {', '.join(self._kinds)}")
        return self._kinds[name]

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    @property
    def names(self) -> list[str]:
        return list(self._kinds)

    def items(self) -> list[tuple[str, T]]:
        return list(self._kinds.items())

    def kind_of(self, value: Any) -> str | None:
        """The kind of a raw mapping (its tag, or the default) or of a spec object."""
        if isinstance(value, dict):
            return value.get(self.tag, self.default)
        return getattr(value, self.tag, None)

    def union(self) -> Any:
        """The tagged union of every registered spec, for a pydantic field; an unknown tag is a validation error."""
        if not self._kinds:
            raise ValueError(f"no {self.what} is registered")
        members = tuple(Annotated[cls, Tag(name)] for name, cls in self._kinds.items())
        return Annotated[Union[members], Discriminator(self.kind_of)]  # noqa: UP007 - a union built at run time
