#!/usr/bin/env python3
"""Generate README.md's configuration reference from connector.toml.example.

Every key of the example (set or commented out) becomes one row: the key, the value the
example shows, and the comment above or beside it. The rows go between the markers
<!-- config-reference:start --> and <!-- config-reference:end --> in README.md.

Usage: config-reference.py [--check]   (--check: exit 1 when README.md is not up to date)
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "connector.toml.example"
README = ROOT / "README.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"

SECTION = re.compile(r"^(?:# )*(\[\[?[^\]]+\]\]?)\s*$")
KEY = re.compile(r'^(?:# )*([A-Za-z_][A-Za-z0-9_]*|"[^"]+")\s*=\s*(.+?)\s*$')
# Sections whose keys are free-form (librdkafka properties, table properties).
FREE_FORM = {"kafka.properties", "tables.properties"}


def split_trailing_comment(value):
    """`"x"   # text` -> ('"x"', 'text'); a '#' inside quotes is part of the value."""
    in_quotes = None
    for i, ch in enumerate(value):
        if ch in "\"'" and in_quotes in (None, ch):
            in_quotes = None if in_quotes else ch
        elif ch == "#" and in_quotes is None:
            return value[:i].strip(), value[i + 1:].strip()
    return value.strip(), ""


def rows():
    section, backend, comment, seen, out = "", None, [], set(), []
    for raw in EXAMPLE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("# >>> backend: "):
            backend = line[len("# >>> backend: "):].split()[0]
            comment = []
            continue
        if line.startswith("# <<< backend: "):
            backend = None
            continue
        if not line or line == "#" or line.startswith("# ==="):
            comment = []
            continue
        m = SECTION.match(line)
        if m:
            name = m.group(1).strip("[]")
            section = re.sub(r'\."[^"]+"$', ".<table>", name)
            comment = []
            continue
        m = KEY.match(line)
        if m and section not in FREE_FORM:
            key, (value, note) = m.group(1), split_trailing_comment(m.group(2))
            name = f"{section}.{key}"
            labelled = backend and (section == "catalog" or backend == "local")
            scope = f"{name} ({backend})" if labelled else name
            if scope not in seen:
                seen.add(scope)
                text = " ".join(comment + ([note] if note else []))
                out.append((scope, value, text))
            comment = []
            continue
        text = line.lstrip("#").strip()
        if text and not KEY.match(text):
            comment.append(text)
    return out


def table():
    lines = [
        "| key | example | what |",
        "|---|---|---|",
    ]
    for key, value, text in rows():
        cell = lambda s: s.replace("|", "\\|")
        lines.append(f"| `{cell(key)}` | `{cell(value)}` | {cell(text)} |")
    return "\n".join(lines)


def main():
    readme = README.read_text()
    if START not in readme or END not in readme:
        sys.exit(f"config-reference.py: {README} lacks the {START} / {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    updated = f"{head}{START}\n{table()}\n{END}{tail}"
    if "--check" in sys.argv[1:]:
        if updated != readme:
            sys.exit("config-reference.py: README.md's configuration reference is out of date "
                     "with connector.toml.example; run scripts/config-reference.py")
        print("README.md's configuration reference matches connector.toml.example")
        return
    README.write_text(updated)


if __name__ == "__main__":
    main()
