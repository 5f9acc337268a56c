"""The official package's API as a drop-in (lua_fast.official) and hub loading (issue 14).

No test touches the network: the hub download is monkeypatched to return files written here.
"""

import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import torch

import lua_fast
from lua_fast import CheckpointError, HubError, hub
from lua_fast.official import load_model, upscale_latent
from conftest import random_state_dict, rel_err, tiny_config

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def official():
    return torch.load(FIXTURES / "official_small_io.pt", weights_only=True)


def test_official_names_reproduce_the_official_outputs(official):
    model = load_model(FIXTURES / "official_small.pth")
    for size in ("16x16", "13x21", "24x40"):
        for head in ("x2", "x4"):
            want = official.get(f"{head}_{size}")
            if want is None:
                continue
            got = upscale_latent(model, official[f"z_{size}"], head=head)
            assert got.shape == want.shape and got.dtype == torch.float32 and got.device == model.device
            assert rel_err(got, want) <= 1e-5, (size, head)


def test_defaults_and_dtypes_follow_the_official_signature():
    import inspect

    sig = inspect.signature(load_model)
    assert list(sig.parameters)[:3] == ["weights_path", "device", "dtype"]
    assert sig.parameters["weights_path"].default is None and sig.parameters["device"].default == "cpu"
    assert sig.parameters["dtype"].default == torch.float32
    assert inspect.signature(upscale_latent).parameters["head"].default == "x2"
    # a bf16 model (which the official code cannot run) returns float32 like the official function
    model = load_model(FIXTURES / "official_small.pth", dtype=torch.bfloat16, backend="torch")
    assert model.dtype == torch.bfloat16 and model.backend == "torch"
    assert upscale_latent(model, torch.randn(1, 16, 8, 8, dtype=torch.float64)).dtype == torch.float32
    # not a tensor: upscale's InputError (before 2026-11-29 an AttributeError from .to)
    with pytest.raises(lua_fast.InputError, match="must be a torch.Tensor, got ndarray"):
        upscale_latent(model, torch.randn(1, 16, 8, 8).numpy())


def test_upscale_accepts_head_names(official):
    up = lua_fast.load(FIXTURES / "official_small.pth")
    z = official["z_16x16"]
    assert torch.equal(up.upscale(z, scale="x4"), up.upscale(z, scale=4))
    both = up.upscale(z, scale=("x2", 4))
    assert set(both) == {"x2", 4} and torch.equal(both["x2"], up.upscale(z, scale=2))
    with pytest.raises(lua_fast.InputError, match="heads .*'x2', 2"):
        up.upscale(z, scale="x8")
    # In any case, keyed as asked (before 2026-11-29 "X4" was an unsupported scale)
    caps = up.upscale(z, scale=("X4", " x2"))
    assert set(caps) == {"X4", " x2"} and torch.equal(caps["X4"], both[4])
    assert torch.equal(up.upscale(z, scale="X4"), both[4])


# ------------------------------------------------------------------------------ hub
@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """hf_hub_download replaced by a function serving files from tmp_path; records its calls."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []

    def download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs.get("revision")) + ((kwargs["repo_type"],) if kwargs.get("repo_type", "model") != "model" else ()))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return tmp_path, calls


def test_hf_paths_load_through_the_hub_cache(fake_hub):
    folder, calls = fake_hub
    sd = random_state_dict(tiny_config(), seed=9)
    torch.save({"params_ema": sd}, folder / "lua_flux.pth")
    up = lua_fast.load("hf://vaskers5/LUA-FLUX/lua_flux.pth")
    assert calls == [("vaskers5/LUA-FLUX", "lua_flux.pth", None)]
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(up.upscale(x), lua_fast.load(sd).upscale(x))
    (folder / "sub").mkdir()
    torch.save(sd, folder / "sub" / "w.pth")
    lua_fast.load("hf://owner/repo@v1.0/sub/w.pth")
    assert calls[-1] == ("owner/repo", "sub/w.pth", "v1.0")


@pytest.mark.parametrize("spec, expected", [
    ("hf://owner/repo@refs/pr/3/lua.pth", ("owner/repo", "lua.pth", "refs/pr/3")),
    ("hf://owner/repo@refs%2Fpr%2F3/sub/lua.pth", ("owner/repo", "sub/lua.pth", "refs/pr/3")),
    ("hf://owner/repo@refs/convert/safetensors/lua.pth", ("owner/repo", "lua.pth", "refs/convert/safetensors")),
    ("hf://owner/repo@refs/lua.pth", ("owner/repo", "lua.pth", "refs")),  # a branch called refs
    ("hf://datasets/owner/repo/lua.pth", ("owner/repo", "lua.pth", None, "dataset")),
    ("hf://spaces/owner/repo@main/w/lua.pth", ("owner/repo", "w/lua.pth", "main", "space")),
])
def test_hub_paths_in_huggingface_hubs_own_syntax(fake_hub, spec, expected):
    """A pull request's revision (refs/pr/N: how a checkpoint is tried before it is merged) was read
    as revision "refs" and file "pr/N/..." before 2026-11-28, and dataset / space repositories
    were looked up as model repositories."""
    folder, calls = fake_hub
    sd = random_state_dict(tiny_config(), seed=9)
    (folder / expected[1]).parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, folder / expected[1])
    lua_fast.load(spec)
    assert calls == [expected]


@pytest.mark.parametrize("url, expected", [
    ("https://huggingface.co/vaskers5/LUA-FLUX/resolve/main/lua_flux.pth?download=true",
     ("vaskers5/LUA-FLUX", "lua_flux.pth", None)),  # the download button's link
    ("https://huggingface.co/owner/repo/blob/v1.0/sub/lua.pth", ("owner/repo", "sub/lua.pth", "v1.0")),  # the page
    ("https://hf.co/datasets/owner/repo/resolve/refs%2Fpr%2F3/lua.pth", ("owner/repo", "lua.pth", "refs/pr/3", "dataset")),
])
def test_a_hub_files_https_link_loads_through_the_hub_cache(fake_hub, url, expected):
    """Before 2026-11-29 a URL was read as a local path: "checkpoint not found: https:/huggingface.co/..."."""
    folder, calls = fake_hub
    (folder / expected[1]).parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_state_dict(tiny_config(), seed=9), folder / expected[1])
    lua_fast.load(url)
    assert calls == [expected]


def test_a_package_on_the_hub_loads_through_its_cache(fake_hub):
    """An exported .pt2 on the Hub; before 2026-11-29 "package not found: hf:/owner/repo/x.pt2". (A
    package whose model this torch cannot load, so the error shows it was fetched and opened.)"""
    import json
    import zipfile

    from lua_fast.export import ExportError

    folder, calls = fake_hub
    with zipfile.ZipFile(folder / "lua_x2.pt2", "w") as z:
        z.writestr("lua_x2/extra/lua_fast.json", json.dumps({"lua_fast": "0.1.0", "torch": "2.11.0"}))
    for url in ("hf://owner/repo/lua_x2.pt2", "https://huggingface.co/owner/repo/resolve/main/lua_x2.pt2"):
        with pytest.raises(ExportError, match=r"lua_x2.pt2 is a lua_fast package \(written by lua_fast 0.1.0 with torch 2.11.0\)"):
            lua_fast.load(url)
    assert calls == [("owner/repo", "lua_x2.pt2", None)] * 2


@pytest.mark.parametrize("url, says", [
    ("https://huggingface.co/vaskers5/LUA-FLUX", "names a Hub repository, not a file in it: pass "
                                                  "hf://vaskers5/LUA-FLUX/<file>"),
    ("https://huggingface.co/datasets/owner/repo/tree/main", "pass hf://datasets/owner/repo/<file>"),
    ("https://example.com/lua_flux.pth", "is a URL: lua_fast reads local files"),
    ("s3://bucket/lua_flux.pth", "is a URL: lua_fast reads local files"),
])
def test_other_urls_are_refused_with_what_to_pass(fake_hub, url, says):
    _, calls = fake_hub
    with pytest.raises(HubError, match=re.escape(says)):
        lua_fast.load(url)
    assert calls == []


def test_a_missing_path_shaped_like_a_repository_id_says_how_to_name_a_hub_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape("vaskers5/LUA-FLUX (a Hugging Face Hub repository? "
                                                          "name a file in it: hf://vaskers5/LUA-FLUX/<file>)")):
        lua_fast.load("vaskers5/LUA-FLUX")
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: models/lua\.pth$"):
        lua_fast.load("models/lua.pth")  # a file's path: no hint


def test_load_model_without_a_path_fetches_the_release(fake_hub):
    folder, calls = fake_hub
    torch.save({"params_ema": random_state_dict(tiny_config(16), seed=9)}, folder / "lua_flux.pth")
    model = load_model()
    assert calls == [("vaskers5/LUA-FLUX", "lua_flux.pth", None)] and model.config.in_channels == 16


def test_a_hub_file_that_is_not_a_lua_checkpoint(fake_hub):
    folder, _ = fake_hub
    torch.save({"weight": torch.zeros(3)}, folder / "other.pth")
    with pytest.raises(CheckpointError, match="not a LUA state dict"):
        lua_fast.load("hf://someone/other-model/other.pth")


def test_offline_with_an_empty_cache(monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    # (huggingface_hub.errors is 0.24's; utils has the class from 0.20, the oldest the hub extra allows)
    from huggingface_hub.utils import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(HubError, match="not in the local Hugging Face cache .* pass a local path"):
        lua_fast.load("hf://vaskers5/LUA-FLUX/lua_flux.pth")
    # The advice is a command that runs with the installed hub (1.0 removed huggingface-cli) and names
    # the repository type and revision the path does.
    with pytest.raises(HubError) as info:
        lua_fast.load("hf://datasets/someone/latents@refs%2Fpr%2F3/sub/lua.pth")
    command = re.search(r"once online \((.*)\) or pass", str(info.value)).group(1)
    assert shlex.split(command)[1:] == ["download", "someone/latents", "sub/lua.pth", "--repo-type", "dataset",
                                        "--revision", "refs/pr/3"]
    cli = shlex.split(command)[0]  # the hub extra installs this CLI beside the interpreter
    assert Path(sys.executable).with_name(cli).exists() or shutil.which(cli), command


def test_missing_huggingface_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import raises ImportError
    with pytest.raises(HubError, match=r'needs huggingface_hub .*pip install "lua_fast\[hub\]"'):
        lua_fast.load("hf://vaskers5/LUA-FLUX/lua_flux.pth")


@pytest.mark.parametrize("spec", ["hf://", "hf://owner", "hf://owner/repo", "hf://owner//file", "hf://datasets/owner/repo",
                                  "hf://owner/repo@/file", "hf://owner/@v1/file"])
def test_malformed_hub_paths(spec):
    with pytest.raises(HubError, match="not a hub path"):
        hub.parse(spec)
