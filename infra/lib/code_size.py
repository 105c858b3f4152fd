#!/usr/bin/env python3
"""Source files and functions that outgrew the project's size limits.

For every `*.rs` file git tracks or would track (`git ls-files --cached --others
--exclude-standard`) outside `tests/` folders:

1. a file over 600 lines outside its `#[cfg(test)] mod … { … }` blocks whose module doc
   (the leading `//!` lines) has no line starting `//! Size:` that says why it is that
   long;
2. a function (`fn` item: free functions, methods, nested functions) longer than 80
   lines, counted from the line of its `fn` keyword to its closing brace. The body is
   found by brace matching on the source with strings, chars and comments blanked
   out; `#[cfg(test)] mod … { … }` blocks are skipped.

Prints `path:line name lines` per finding (a file's name is `(file)`), then a summary.

Usage: code_size.py [FILE ...]   (default: every tracked file, as above)
Exit status 1 when anything is found, 0 otherwise. Standard library only.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_FILE_LINES = 600
MAX_FN_LINES = 80
SIZE_NOTE = "//! Size:"

FN_ITEM = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")
TEST_MOD = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+[A-Za-z_][A-Za-z0-9_]*\s*\{")
RAW_STRING = re.compile(r'b?r(#*)"')


def blank(text: str) -> str:
    """`text` with every comment, string and char literal replaced by spaces (newlines
    kept, so offsets and line numbers stay as they were)."""
    out = list(text)
    i, n = 0, len(text)

    def wipe(start: int, end: int) -> None:
        for k in range(start, min(end, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            end = text.find("\n", i)
            end = n if end < 0 else end
            wipe(i, end)
            i = end
        elif c == "/" and nxt == "*":
            # Block comments nest in Rust.
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            wipe(i, j)
            i = j
        elif (c in "rb") and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")) and (
            m := RAW_STRING.match(text, i)
        ):
            close = '"' + m.group(1)
            end = text.find(close, m.end())
            end = n if end < 0 else end + len(close)
            wipe(i, end)
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            wipe(i, j + 1)
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}', '{') or a lifetime ('a, 'static).
            if nxt == "\\":
                j = text.find("'", i + 3 if text.startswith("\\'", i + 1) else i + 2)
                j = n if j < 0 else j
                wipe(i, j + 1)
                i = j + 1
            elif i + 2 < n and text[i + 2] == "'":
                wipe(i, i + 3)
                i += 3
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def matching_brace(code: str, open_at: int) -> int:
    """Offset of the `}` closing the `{` at `open_at` (len(code) when unbalanced)."""
    depth = 0
    for k in range(open_at, len(code)):
        if code[k] == "{":
            depth += 1
        elif code[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    return len(code)


def without_test_modules(code: str) -> str:
    """`code` with the bodies of `#[cfg(test)] mod … { … }` blanked out."""
    out = code
    for m in TEST_MOD.finditer(code):
        close = matching_brace(code, m.end() - 1)
        out = out[: m.start()] + re.sub(r"[^\n]", " ", out[m.start() : close + 1]) + out[close + 1 :]
    return out


def body_start(code: str, after: int) -> int | None:
    """The `{` opening the body of the `fn` whose signature starts at `after`, or None
    for a declaration without a body (`fn f();` in a trait or `extern` block)."""
    depth = 0
    for k in range(after, len(code)):
        c = code[k]
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif depth == 0 and c == "{":
            return k
        elif depth == 0 and c == ";":
            return None
    return None


def long_functions(text: str) -> list[tuple[int, str, int]]:
    """(line, name, lines) of every function over the limit."""
    code = without_test_modules(blank(text))
    found = []
    for m in FN_ITEM.finditer(code):
        open_at = body_start(code, m.end())
        if open_at is None:
            continue
        close = matching_brace(code, open_at)
        first = code.count("\n", 0, m.start()) + 1
        last = code.count("\n", 0, close) + 1
        lines = last - first + 1
        if lines > MAX_FN_LINES:
            found.append((first, m.group(1), lines))
    return found


def code_lines(text: str) -> int:
    """Lines of `text` outside its test modules."""
    code = blank(text)
    inside = 0
    for m in TEST_MOD.finditer(code):
        close = matching_brace(code, m.end() - 1)
        inside += code.count("\n", m.start(), close + 1) + 1
    return len(text.splitlines()) - inside


def has_size_note(text: str) -> bool:
    """True when the leading `//!` lines (blank lines between them allowed) include one
    starting `//! Size:`."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("//!"):
            return False
        if stripped.startswith(SIZE_NOTE):
            return True
    return False


def tracked_sources() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.rs"],
        cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    return sorted({p for p in listed if "tests" not in Path(p).parts[:-1]})


def main() -> int:
    files = sys.argv[1:] or tracked_sources()
    big_files, long_fns, scanned = 0, 0, 0
    for path in files:
        source = ROOT / path
        if not source.is_file():
            continue  # deleted in the work tree, not yet in the index
        text = source.read_text(encoding="utf-8", errors="replace")
        scanned += 1
        lines = code_lines(text)
        if lines > MAX_FILE_LINES and not has_size_note(text):
            print(f"{path}:1 (file) {lines}")
            big_files += 1
        for line, name, length in long_functions(text):
            print(f"{path}:{line} {name} {length}")
            long_fns += 1
    print(
        f"{scanned} files scanned: {big_files} over {MAX_FILE_LINES} lines without a "
        f"`{SIZE_NOTE}` line, {long_fns} functions over {MAX_FN_LINES} lines"
    )
    return 1 if big_files or long_fns else 0


if __name__ == "__main__":
    sys.exit(main())
