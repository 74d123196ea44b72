"""``conjecture`` results (Conjecture 1: training only the subnetwork reproduces full finetuning):
:class:`ConjectureResult`, its per-matrix-type :class:`Group`, and their JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from .schema import Report

REPORT_KIND = "subnetscope.conjecture"
SCHEMA_VERSION = "1.0"
PAPER = "paper §4: 94.0% (DPO) / 90.5% (PRIME) identical at 1e-5, 100% at 1e-4"


@dataclass
class Group:
    """Counts of one group of tensors (the whole model or one matrix type)."""

    numel: int = 0
    unchanged: list[int] = field(default_factory=list)  #: elements with |S - F| <= tol, per tolerance
    identical: int = 0  #: bit-identical elements of S and F
    subnetwork: int = 0  #: elements of F's subnetwork (F vs B)
    reproduced: list[int] = field(default_factory=list)  #: of those, |S - F| <= tol, per tolerance

    def add(
        self, numel: int, unchanged: list[int], identical: int, subnetwork: int, reproduced: list[int]
    ) -> None:
        """Add one tensor's counts."""
        if not self.unchanged:
            self.unchanged = [0] * len(unchanged)
            self.reproduced = [0] * len(reproduced)
        self.numel += numel
        self.identical += identical
        self.subnetwork += subnetwork
        self.unchanged = [a + b for a, b in zip(self.unchanged, unchanged)]
        self.reproduced = [a + b for a, b in zip(self.reproduced, reproduced)]

    @property
    def identical_share(self) -> list[float]:
        """Share of weights of S equal to F within each tolerance."""
        return [u / self.numel if self.numel else 1.0 for u in self.unchanged]

    @property
    def reproduced_share(self) -> list[float]:
        """Share of F's subnetwork that S reproduces within each tolerance."""
        return [r / self.subnetwork if self.subnetwork else 1.0 for r in self.reproduced]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "numel": self.numel,
            "bit_identical": self.identical,
            "unchanged": list(self.unchanged),
            "identical_share": self.identical_share,
            "subnetwork": self.subnetwork,
            "reproduced": list(self.reproduced),
            "reproduced_share": self.reproduced_share,
        }


@dataclass
class ConjectureResult:
    """Result of :func:`conjecture`; ``identical`` and ``reproduced`` map each tolerance to a share."""

    tolerances: list[float]
    subnetwork_tolerance: float
    semantics: str
    overall: Group
    by_kind: dict[str, Group]
    base_vs_full: Report
    full_vs_sub: Report

    @property
    def identical(self) -> dict[float, float]:
        """Tolerance → share of all weights of S within tol of F."""
        return dict(zip(self.tolerances, self.overall.identical_share))

    @property
    def reproduced(self) -> dict[float, float]:
        """Tolerance → share of F's subnetwork that S reproduces within tol."""
        return dict(zip(self.tolerances, self.overall.reproduced_share))

    @property
    def full_sparsity(self) -> float:
        """Update sparsity of F vs B at the subnetwork tolerance."""
        return 1 - self.overall.subnetwork / self.overall.numel if self.overall.numel else 1.0

    def to_json(self) -> dict[str, Any]:
        """The versioned ``subnetscope.conjecture`` JSON document."""
        return {
            "schema_version": SCHEMA_VERSION,
            "report": REPORT_KIND,
            "tool": {"name": "subnetscope", "version": __version__},
            "semantics": self.semantics,
            "tolerances": list(self.tolerances),
            "subnetwork_tolerance": self.subnetwork_tolerance,
            "base": self.base_vs_full.base,
            "full": self.base_vs_full.target,
            "sub": self.full_vs_sub.target,
            "full_sparsity": self.full_sparsity,
            "overall": self.overall.to_json(),
            "by_kind": {k: g.to_json() for k, g in self.by_kind.items()},
            "findings": [f.to_json() for f in self.base_vs_full.findings + self.full_vs_sub.findings],
        }
