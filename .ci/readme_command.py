"""Prints one of the README's two set-up commands, as written there.

    python .ci/readme_command.py 2     # -> pip install ".[test]" && python -m pytest

The set-up commands are the README's first ```bash block, exactly two lines: the demo,
then the tests. .ci/run runs the second one from here, so CI and the README cannot drift
apart; a README whose first block is anything else stops CI with the reason.
Standard library only: it runs before anything is installed.
"""

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def setup_commands(text: str) -> list:
    block = re.search(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    if block is None:
        raise SystemExit(f"{README}: no ```bash block (the set-up commands)")
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    if len(lines) != 2 or "aas demo" not in lines[0] or "pytest" not in lines[1]:
        raise SystemExit(
            f"{README}: the first ```bash block must be the two set-up commands "
            f"(the demo, then the tests), found {lines}"
        )
    return lines


if __name__ == "__main__":
    which = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    print(setup_commands(README.read_text(encoding="utf-8"))[which - 1])
