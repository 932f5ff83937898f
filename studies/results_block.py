"""Write a study's generated text into its results page, docs/results/<page>.md, between the block's
`<!-- NAME:begin -->` / `<!-- NAME:end -->` markers (the one definition the studies and bench/core_floor.py
share). Only the text between the markers changes, so a re-run that measures the same numbers leaves the page
byte-identical."""
import re
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"

# Block name -> the page that holds it.
PAGES = {
    "paper-tables": "paper_tables.md",
    "data-aware": "data_aware.md",
    "retraining-headroom": "retraining_headroom.md",
    "whole-models": "whole_models.md",
    "core-floor": "native_speed.md",
}


def page_of(name: str) -> Path:
    return RESULTS / PAGES[name]


def write_results_block(name: str, text: str) -> Path:
    """Replace block NAME's text in its page; returns the page's path."""
    page = page_of(name)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    content = page.read_text() if page.exists() else ""
    if begin not in content or end not in content:
        sys.exit(f"{page} has no {begin} … {end} markers")
    content = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{text}\n{end}", content, flags=re.S)
    page.write_text(content)
    return page
