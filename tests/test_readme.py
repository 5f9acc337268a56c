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


def _documented_commands(readme: str) -> list[str]:
    """Every full ``lua-fast`` command line of the README's bash blocks and inline code, as a user
    would type it: comments and pipes dropped, ``[--opt x]`` taken with its option, ``2|4`` as 2."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", readme, re.S):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines()]
    lines += re.findall(r"`(lua-fast [^`]*)`", readme)
    commands = []
    for line in lines:
        if not line.startswith("lua-fast"):
            continue
        line = re.split(r"\s+#|\|\s", line)[0]  # a comment, or a pipe into another command
        line = re.sub(r"\[([^\]]*)\]", r"\1", line)
        line = re.sub(r"(\S+)\|\S+", r"\1", line)
        words = line.split()
        if "..." in line or len(words) == 2 and words[1] not in ("info", "--version"):
            continue  # a subcommand named in prose, not a command line
        commands.append(" ".join(words))
    return sorted(set(commands))


def test_every_command_line_in_the_readme_parses():
    """Each documented command line is accepted by the CLI's parser as written (options, choices,
    types), so the README cannot drift from the CLI unnoticed. Parsing only: nothing runs."""
    import shlex

    import pytest

    from lua_fast.cli import build_parser

    commands = _documented_commands((ROOT / "README.md").read_text())
    assert len(commands) >= 15 and any("convert" in c and "--dtype bf16" in c for c in commands)
    assert any(c.startswith("lua-fast comfyui uninstall") for c in commands)
    for command in commands:
        args = shlex.split(command)[1:]
        if args == ["--version"]:
            with pytest.raises(SystemExit) as done:
                build_parser().parse_args(args)
            assert done.value.code == 0
            continue
        parsed = build_parser().parse_args(args)
        assert callable(parsed.func), command
