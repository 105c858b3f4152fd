#!/usr/bin/env python3
"""Import circles between a crate's modules.

For every crate of the workspace, and inside it for every module that has child
modules, draws an edge from one child to a sibling when the child's source (its file
and everything under it) names the sibling — `crate::a::…`, `super::a::…` from one
level down, or a `use` of it — and prints each strongly connected group of two or
more siblings. A parent naming its own children, or a child its parent, is not a
circle: that is how Rust declares and re-exports modules.

Usage: module_cycles.py [CRATE_DIR ...]   (default: every workspace member)
Exit status 1 when a circle is found.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MOD_DECL = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", re.M)
COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
STRING = re.compile(r'"(?:\\.|[^"\\])*"')


class Module:
    def __init__(self, path: tuple[str, ...], file: Path):
        self.path = path
        self.file = file
        self.children: dict[str, Module] = {}

    def source(self) -> str:
        text = self.file.read_text()
        text = STRING.sub('""', COMMENT.sub("", text))
        return text

    def all_sources(self) -> str:
        return "\n".join([self.source()] + [c.all_sources() for c in self.children.values()])


def child_file(parent: Module, name: str) -> Path | None:
    f = parent.file
    base = f.parent if f.name in ("lib.rs", "main.rs", "mod.rs") else f.with_suffix("")
    for candidate in (base / f"{name}.rs", base / name / "mod.rs"):
        if candidate.exists():
            return candidate
    return None


def load(module: Module) -> Module:
    for name in MOD_DECL.findall(module.source()):
        f = child_file(module, name)
        if f is not None:
            module.children[name] = load(Module(module.path + (name,), f))
    return module


def names_sibling(child: Module, sibling: str, parent_path: tuple[str, ...]) -> bool:
    text = child.all_sources()
    absolute = "::".join(("crate",) + parent_path + (sibling,))
    if re.search(rf"\b{re.escape(absolute)}\b", text):
        return True
    # `super::sibling` from the child's own file; deeper files need one more `super`.
    if re.search(rf"\bsuper::{sibling}\b", child.source()):
        return True
    # `use crate::{a, b}` / `use crate::parent::{a, b::c}` groups.
    prefix = "::".join(("crate",) + parent_path)
    for group in re.findall(rf"\b{re.escape(prefix)}::\{{([^}}]*)\}}", text):
        if re.search(rf"(?:^|[,\s]){sibling}\b", group):
            return True
    return False


def cycles(parent: Module) -> list[list[str]]:
    names = sorted(parent.children)
    edges = {
        a: [b for b in names if b != a and names_sibling(parent.children[a], b, parent.path)]
        for a in names
    }
    found = [sorted(c) for c in tarjan(names, edges) if len(c) > 1]
    for child in parent.children.values():
        found += cycles(child)
    return [["::".join(parent.path + (n,)) for n in c] for c in found] if found else []


def tarjan(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            groups.append(group)

    for v in nodes:
        if v not in index:
            visit(v)
    return groups


def crate_roots(crate: Path) -> list[Path]:
    roots = [crate / "src" / "lib.rs", crate / "src" / "main.rs"]
    roots += sorted((crate / "src" / "bin").glob("*.rs"))
    return [r for r in roots if r.exists()]


def main(argv: list[str]) -> int:
    if argv:
        crates = [Path(a).resolve() for a in argv]
    else:
        members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
        crates = [ROOT / m for m in members]
    bad = 0
    for crate in crates:
        for root in crate_roots(crate):
            for group in cycles(load(Module((), root))):
                bad += 1
                rel = root.relative_to(ROOT)
                print(f"{rel}: import circle between {', '.join(group)}")
    if bad == 0:
        print(f"no import circles in {len(crates)} crates")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
