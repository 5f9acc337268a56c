"""The README's set-up commands are the ones CI runs (the project's contract)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_install_and_test_commands():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Set up, test, run\s+```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    install, test = block[0], block[1]
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert install in ci_lines and test in ci_lines
    assert "pytest" in test and "torch==2.13.0" in install
