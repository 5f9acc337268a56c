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


def _python_block(readme: str, heading: str) -> str:
    """The first Python block under ``## heading``."""
    return re.search(rf"\n## {re.escape(heading)}\n(?:(?!\n## ).)*?```python\n(.*?)```", readme, re.S).group(1)


def test_the_readmes_python_api_and_migration_examples_run(tmp_path):
    """The first examples a user copies, run as written but on the CPU, on a small random model saved
    where they name "lua_flux.pth", with a 12x12 latent instead of 128x128."""
    import torch

    from lua_fast import LUAConfig
    from lua_fast.reference import LUA

    readme = (ROOT / "README.md").read_text()
    code = _python_block(readme, "Python API") + _python_block(readme, "Migrating from the official package")
    weights = tmp_path / "lua_flux.pth"
    torch.manual_seed(0)
    torch.save({"params_ema": LUA(LUAConfig.small()).state_dict()}, weights)
    assert code.count('"cuda"') >= 4 and code.count("128, 128") == 1 and code.count('"lua_flux.pth"') == 3
    code = code.replace('"cuda"', '"cpu"').replace("128, 128", "12, 12").replace('"lua_flux.pth"', repr(str(weights)))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["z2"].shape == (1, 16, 24, 24) and scope["z2"].dtype == torch.float32  # upscale_latent: float32
    assert set(scope["both"]) == {2, 4} and scope["both"][4].shape == (1, 16, 48, 48)
    assert scope["model"].dtype == torch.bfloat16 and scope["up"].dtype == torch.bfloat16
