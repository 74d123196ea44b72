"""Per-tensor statistics of a comparison and their (associative, order-free) merge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Counts:
    """Mergeable element counts: one ``unchanged`` count per tolerance, in the report's tolerance order."""

    numel: int = 0
    identical: int = 0
    unchanged: list[int] = field(default_factory=list)
    nonfinite_base: int = 0
    nonfinite_target: int = 0

    @classmethod
    def zeros(cls, ntol: int) -> Counts:
        """Empty counts for ``ntol`` tolerances."""
        return cls(unchanged=[0] * ntol)

    def add(self, other: Counts) -> None:
        """Add ``other`` into ``self`` (in place)."""
        if not self.unchanged:
            self.unchanged = [0] * len(other.unchanged)
        self.numel += other.numel
        self.identical += other.identical
        self.unchanged = [a + b for a, b in zip(self.unchanged, other.unchanged)]
        self.nonfinite_base += other.nonfinite_base
        self.nonfinite_target += other.nonfinite_target

    @property
    def sparsity(self) -> list[float]:
        """Update sparsity (unchanged / numel) per tolerance; 1.0 for an empty set."""
        return [u / self.numel if self.numel else 1.0 for u in self.unchanged]

    @property
    def changed(self) -> list[int]:
        """Updated elements per tolerance."""
        return [self.numel - u for u in self.unchanged]

    def to_json(self) -> dict[str, Any]:
        """JSON form (stable keys)."""
        return {
            "numel": self.numel,
            "identical": self.identical,
            "unchanged": list(self.unchanged),
            "sparsity": self.sparsity,
            "nonfinite_base": self.nonfinite_base,
            "nonfinite_target": self.nonfinite_target,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Counts:
        """Inverse of :meth:`to_json`."""
        return cls(
            int(obj["numel"]),
            int(obj["identical"]),
            [int(u) for u in obj["unchanged"]],
            int(obj.get("nonfinite_base", 0)),
            int(obj.get("nonfinite_target", 0)),
        )


@dataclass
class TensorStats:
    """The comparison of one tensor present on both sides."""

    name: str
    shape: list[int]  #: target shape
    dtype: str  #: target dtype code
    layer: int | None
    kind: str
    counts: Counts
    base_shape: list[int] | None = None  #: set when the shape changed
    base_dtype: str | None = None  #: set when the dtype changed
    compared: int = 0  #: elements actually compared (shared rows of a resized tensor)
    extra: dict[str, Any] = field(default_factory=dict)  #: what extra consumers (histograms, rank) add

    def to_json(self) -> dict[str, Any]:
        """JSON form: the stable keys first, then counts and extras."""
        d: dict[str, Any] = {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layer": self.layer,
            "kind": self.kind,
        }
        d.update(self.counts.to_json())
        d["compared"] = self.compared
        if self.base_shape is not None:
            d["base_shape"] = list(self.base_shape)
        if self.base_dtype is not None:
            d["base_dtype"] = self.base_dtype
        d.update(self.extra)
        return d

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TensorStats:
        """Inverse of :meth:`to_json`."""
        known = {
            "name", "shape", "dtype", "layer", "kind", "numel", "identical", "unchanged", "sparsity",
            "nonfinite_base", "nonfinite_target", "compared", "base_shape", "base_dtype",
        }  # fmt: skip
        return cls(
            name=obj["name"],
            shape=list(obj["shape"]),
            dtype=obj["dtype"],
            layer=obj.get("layer"),
            kind=obj["kind"],
            counts=Counts.from_json(obj),
            base_shape=obj.get("base_shape"),
            base_dtype=obj.get("base_dtype"),
            compared=int(obj.get("compared", obj["numel"])),
            extra={k: v for k, v in obj.items() if k not in known},
        )
