"""Medians, ratios and the markdown tables ``python -m bench`` prints (and writes to RESULTS.md)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench.procs import Sample

MIB = 2**20


@dataclass
class ToolResult:
    """All samples of one tool in one row; ``nbytes`` is the payload moved per sample."""

    tool: str
    nbytes: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Median wall time, s."""
        return statistics.median(s.seconds for s in self.samples)

    @property
    def mb_per_s(self) -> float:
        """Payload MB (10^6 B) per second of median wall time."""
        return self.nbytes / 1e6 / self.seconds

    @property
    def cpu_seconds(self) -> float:
        """Median user+sys CPU of the tool's process tree, s."""
        return statistics.median(s.cpu_seconds for s in self.samples)

    @property
    def max_rss(self) -> int:
        """Largest peak RSS over the samples, bytes."""
        return max(s.max_rss for s in self.samples)


@dataclass
class TransferRow:
    """One transfer measurement (e.g. "upload 1 GB file") on one server, all tools."""

    name: str
    server: str
    results: dict[str, ToolResult]

    def ratio(self, peer: str, ours: str = "kresume") -> float | None:
        """Speed of ``ours`` ÷ speed of ``peer`` (= peer's median time ÷ ours); ≥ 1.0 means ours is
        as fast or faster. None when either was not measured."""
        if ours not in self.results or peer not in self.results:
            return None
        return self.results[peer].seconds / self.results[ours].seconds


@dataclass
class Metric:
    """A single-number row (overhead, RSS, latency) with its target and how it was measured."""

    name: str
    value: str
    target: str
    met: bool | None
    how: str


def _fmt_ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def transfer_tables(rows: list[TransferRow], peers: tuple[str, ...]) -> str:
    """Two markdown tables: kresume's speed ratio per peer, then every tool's medians."""
    others = [p for p in peers if p != "kresume"]
    lines = ["| measurement | server | " + " | ".join(f"vs {p}" for p in others) + " |",
             "|---|---|" + "---|" * len(others)]
    for r in rows:
        lines.append(f"| {r.name} | {r.server} | " + " | ".join(_fmt_ratio(r.ratio(p)) for p in others) + " |")
    lines += ["", "| measurement | server | tool | median s | MB/s | CPU s | peak RSS MiB | runs |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for t in r.results.values():
            lines.append(f"| {r.name} | {r.server} | {t.tool} | {t.seconds:.2f} | {t.mb_per_s:.0f} | "
                         f"{t.cpu_seconds:.2f} | {t.max_rss / MIB:.0f} | {len(t.samples)} |")
    return "\n".join(lines)


def metric_table(metrics: list[Metric]) -> str:
    """Markdown table of the single-number rows."""
    lines = ["| measurement | value | target | met | how |", "|---|---|---|---|---|"]
    for m in metrics:
        met = "–" if m.met is None else ("yes" if m.met else "**no**")
        lines.append(f"| {m.name} | {m.value} | {m.target} | {met} | {m.how} |")
    return "\n".join(lines)


def machine_table(facts: dict[str, str]) -> str:
    """Markdown table of the machine facts."""
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in facts.items())])
