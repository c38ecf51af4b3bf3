"""Generated sections of the documentation, so the pages cannot drift from the code.

A page marks a generated section with ``<!-- generated:NAME -->`` ... ``<!-- /generated:NAME -->``; NAME is one
of :data:`GENERATORS`: ``support-matrix`` (every image-text-to-text family, from :mod:`eahlib.support`), ``support-summary`` (its count
and the types not served, for the README) and
``methods`` (every intervention and decoder with its parameters, published defaults and reference, from the
method registry: the same facts ``python -m eahlib.bench methods`` prints). ``python -m eahlib.docgen --write``
rewrites every section of README.md and docs/*.md; ``--check`` exits 1 naming the stale ones (the tests run it).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = re.compile(r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)


def methods_markdown() -> str:
    """Every registered component as a markdown table: kind, what it does, parameters with published defaults,
    what an intervention composes with, and the reference."""
    from eahlib.methods import components

    lines = ["| method | kind | what it does | parameters (published defaults) | reference |", "|---|---|---|---|---|"]
    for component in components().values():
        params = ", ".join(f"`{name}={json.dumps(value)}`" for name, value in component.defaults.items()) or "none"
        what = component.description
        if component.kind == "intervention":
            composes = "every decoder" if component.composes_with is None else ", ".join(component.composes_with)
            what += f" (composes with {composes})"
        lines.append(f"| `{component.name}` | {component.kind} | {what} | {params} | {component.reference} |")
    return "\n".join(lines)


def _support_matrix() -> str:
    from eahlib.support import markdown

    return markdown()


def _support_summary() -> str:
    from eahlib.support import summary_markdown

    return summary_markdown()


GENERATORS: dict[str, Callable[[], str]] = {
    "support-matrix": _support_matrix, "support-summary": _support_summary, "methods": methods_markdown,
}
"""Section name -> the function that writes its markdown."""


def pages(root: Path = ROOT) -> list[Path]:
    """The documentation pages: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def render(text: str) -> str:
    """``text`` with every generated section rewritten.

    Raises:
        ValueError: a section names no known generator.
    """

    def rewrite(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in GENERATORS:
            raise ValueError(f"Unknown generated section {name!r}; known: {sorted(GENERATORS)}.")
        return f"{match.group(1)}{GENERATORS[name]()}\n{match.group(4)}"

    return SECTION.sub(rewrite, text)


def stale(root: Path = ROOT) -> list[str]:
    """``"page: section"`` for every generated section that differs from what its generator writes now."""
    found = []
    for page in pages(root):
        text = page.read_text(encoding="utf-8")
        fresh = {m["name"]: m["body"] for m in SECTION.finditer(render(text))}
        found += [f"{page.relative_to(root)}: {m['name']}" for m in SECTION.finditer(text) if fresh[m["name"]] != m["body"]]
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eahlib.docgen", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite every generated section")
    action.add_argument("--check", action="store_true", help="exit 1 if a generated section is stale")
    args = parser.parse_args(argv)
    if args.write:
        for page in pages():
            text = page.read_text(encoding="utf-8")
            if render(text) != text:
                page.write_text(render(text), encoding="utf-8")
                print(f"rewrote {page.relative_to(ROOT)}")
        return
    outdated = stale()
    if outdated:
        raise SystemExit(f"Stale generated sections: {outdated}; run python -m eahlib.docgen --write")


if __name__ == "__main__":
    main()
