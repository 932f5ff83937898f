"""Write a benchmark's generated text into README.md between its `<!-- NAME:begin -->` / `<!-- NAME:end -->`
markers (the one definition the bench scripts share)."""
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def write_readme_block(name: str, text: str) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    content = README.read_text()
    if begin not in content or end not in content:
        sys.exit(f"README.md has no {begin} … {end} markers")
    content = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{text}\n{end}", content, flags=re.S)
    README.write_text(content)
