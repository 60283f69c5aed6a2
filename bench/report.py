"""Benchmark results and their Markdown form: one table per benchmark, figure next to the
floor measured in the same run, the ratio between them, the target and whether it was met.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    """One measured figure. ``ratio`` is figure/floor; ``passed`` is None when no target."""

    what: str
    figure: str
    floor: str = "-"
    ratio: str = "-"
    target: str = "-"
    passed: bool | None = None


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("pass" if passed else "**FAIL**")


def section_markdown(s: Section) -> list[str]:
    out = [f"## {s.title}", ""]
    out += ["| measure | figure | floor | ratio | target | result |"]
    out += ["|---|---|---|---|---|---|"]
    for r in s.rows:
        out.append(
            f"| {r.what} | {r.figure} | {r.floor} | {r.ratio} | {r.target} | {verdict(r.passed)} |"
        )
    out.append("")
    out += [f"- {n}" for n in s.notes]
    out += [f"- benchmark wall time: {s.seconds:.0f} s", ""]
    return out


def markdown(sections: list[Section], facts: dict[str, str], command: str) -> str:
    out = ["## Run", "", f"Command: `{command}`", ""]
    out += ["| fact | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in facts.items()]
    out.append("")
    for s in sections:
        out += section_markdown(s)
    return "\n".join(out)


def as_json(sections: list[Section], facts: dict[str, str], command: str) -> dict[str, Any]:
    return {"command": command, "facts": facts, "sections": [asdict(s) for s in sections]}
