"""MkDocs hook: writes every script's `--help` into reference/scripts.md, so the flags reference is
generated from the parsers themselves and never falls behind them.

The marker line in that page is replaced by one section per script of `hpa.cli.SCRIPTS`, each the
`format_help()` of `hpa.cli.build_parser(name)`, formatted at a fixed width of 100 columns.
"""

from __future__ import annotations

import os

from mkdocs.exceptions import PluginError

MARKER = "<!-- flags: every script's --help, written here by docs/hooks/flags.py -->"
PAGE = "reference/scripts.md"
WIDTH = "100"


def help_sections() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import hpa.cli  # inside the hook: the manual's other pages build without importing the toolkit

    # argparse's HelpFormatter reads the width from the terminal size, which COLUMNS overrides; NO_COLOR
    # keeps argparse versions that colour their help to plain text
    saved = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR")}
    os.environ.update(COLUMNS=WIDTH, NO_COLOR="1")
    try:
        sections = []
        for name in hpa.cli.SCRIPTS:
            text = hpa.cli.build_parser(name).format_help().rstrip()
            sections.append(f"## {name}\n\n````text\n{text}\n````\n")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return "\n".join(sections)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE}: the marker {MARKER!r} is missing")
    return markdown.replace(MARKER, help_sections())
