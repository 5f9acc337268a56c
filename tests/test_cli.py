"""The lua-fast command line: info, demo, convert, upscale."""

import argparse
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lua_fast
from lua_fast.cli import main
from lua_fast.reference import LUA
from conftest import random_state_dict, tiny_config


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lua_fast"] == lua_fast.__version__
    assert report["torch"] == torch.__version__
    assert report["backends"]["reference"]["cpu/fp32"] == "available"
    assert report["backends"]["torch"]["cpu/fp32"] == "available"
    assert report["backends"]["triton"]["cpu/fp32"] != "available"  # interpreted: only when forced
    assert report["auto_backend"]["cpu"] == "torch"
    assert "reason" in report["native_extension"]
    assert "cpu" not in report["programmatic_dependent_launch"]  # (a CUDA launch option)
    # The CPU and cuDNN, new on 2026-11-28 (a bug report's first questions).
    assert report["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert report["cpu"]["threads"] == torch.get_num_threads() and report["cpu"]["name"]
    ram = report["cpu"]["memory_available"]  # tile="auto"'s CPU budget is a share of it
    assert ram is None or (isinstance(ram, int) and ram > 0)
    assert set(report["cpu"]["native_kernels"]) == {"bf16", "fp16"}
    assert report["cpu"]["quota"] is None or report["cpu"]["quota"] > 0  # (a container's CPU limit)
    assert report["cudnn"] == (torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)


def test_info_says_when_a_version_is_outside_the_tested_range(monkeypatch, capsys):
    info_module = importlib.import_module("lua_fast.info")  # (lua_fast.info is also the function)

    assert info_module.version_check("torch", "2.11.0+cu130") is None
    assert info_module.version_check("torch", "2.14.1") is None
    assert info_module.version_check("triton", "3.6.0") is None and info_module.version_check("triton", None) is None
    assert info_module.version_check("torch", "2.15.0.dev20270101+cpu") == "newer than the tested 2.11-2.14"
    assert info_module.version_check("triton", "3.10.0") == "newer than the tested 3.6-3.9"  # (not "3.1")
    assert info_module.version_check("triton", "3.5.1") == "older than the tested 3.6-3.9"
    assert "not understood" in info_module.version_check("triton", "main")
    # (the versions installed here are in range: CI pins them)
    assert main(["info", "--json"]) == 0 and json.loads(capsys.readouterr().out)["untested_versions"] == {}
    monkeypatch.setattr(torch, "__version__", "2.16.0")
    assert main(["info"]) == 0
    assert "2.16.0  (WARNING: newer than the tested 2.11-2.14)" in capsys.readouterr().out


def test_python_dash_m_info_and_demo_small():
    out = subprocess.run([sys.executable, "-m", "lua_fast", "info"], capture_output=True, text=True, check=True)
    assert "backends" in out.stdout and "reference" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "lua_fast", "demo", "--small"], capture_output=True, text=True, check=True
    )
    assert "(1, 16, 20, 23)  ->  output (1, 16, 40, 46)" in out.stdout
    assert "backend: torch on cpu" in out.stdout and "ms median" in out.stdout and "MiB" in out.stdout


# The script installed with this interpreter's package, not whichever "lua-fast" PATH finds first
# (a shim of another Python would test another installation).
CONSOLE_SCRIPT = shutil.which("lua-fast", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(CONSOLE_SCRIPT is None, reason="no lua-fast console script beside this Python (not installed)")
def test_console_script():
    out = subprocess.run([CONSOLE_SCRIPT, "demo", "--small", "--scale", "4", "--repeat", "1"],
                         capture_output=True, text=True, check=True)
    assert "output (1, 16, 80, 92) (x4)" in out.stdout


def test_convert_then_upscale_both_formats(tmp_path, capsys):
    sd = random_state_dict(tiny_config(), seed=4)
    pth, st = tmp_path / "lua.pth", tmp_path / "lua.safetensors"
    torch.save({"params_ema": sd}, pth)
    assert main(["convert", str(pth), str(st)]) == 0
    assert "round trip verified" in capsys.readouterr().out
    back = load_file(str(st))
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)

    latents = torch.randn(2, 4, 7, 9)
    save_file({"latents": latents}, str(tmp_path / "in.safetensors"))
    torch.save(latents, tmp_path / "in.pt")
    outputs = []
    for weights, inp, out in [(pth, "in.safetensors", "a.safetensors"), (st, "in.pt", "b.pt")]:
        args = ["upscale", "--weights", str(weights), "--input", str(tmp_path / inp),
                "--output", str(tmp_path / out), "--scale", "4"]
        assert main(args) == 0
        outputs.append(lua_fast.cli.read_latents(tmp_path / out))
    expected = lua_fast.load(sd).upscale(latents, scale=4)
    assert torch.equal(outputs[0], expected) and torch.equal(outputs[1], expected)


def test_convert_casts_and_writes_the_released_torch_save_layout(tmp_path, capsys):
    """``convert --dtype bf16`` halves the file, and loads to the same bits as the float32 source
    loaded in bf16 (one rounding either way); a ``.pth`` output holds ``params_ema`` as the release
    does, which a strict ``load_state_dict`` (the official loader's) takes. Before 2026-11-29 the
    output had to be safetensors and kept the source's dtypes."""
    sd = random_state_dict(tiny_config(), seed=5)
    source = tmp_path / "lua.safetensors"
    save_file(sd, str(source))
    z = torch.randn(2, 4, 9, 7)
    for dtype, flag in ((torch.float32, None), (torch.bfloat16, "BF16"), (torch.float16, "float16")):
        for name in ("out.pth", "out.sft"):
            assert main(["convert", str(source), str(tmp_path / name), "--force"] + (["--dtype", flag] if flag else [])) == 0
            assert f"({str(dtype).removeprefix('torch.')})" in capsys.readouterr().out
            written = (torch.load(tmp_path / name, weights_only=True)["params_ema"] if name.endswith(".pth")
                       else load_file(str(tmp_path / name)))
            assert set(written) == set(sd)
            for k, v in written.items():
                assert torch.equal(v, sd[k].to(dtype) if sd[k].is_floating_point() else sd[k]), k
            model = LUA(tiny_config())
            model.load_state_dict(written, strict=True)
            want = lua_fast.load(sd, dtype=dtype).upscale(z)
            assert torch.equal(lua_fast.load(tmp_path / name, dtype=dtype).upscale(z), want)
    assert (tmp_path / "out.sft").stat().st_size < 0.6 * source.stat().st_size  # float16 now
    for bad in ("float64", "int8", "mixed"):
        with pytest.raises(SystemExit):  # refused while parsing
            main(["convert", str(source), str(tmp_path / "x.sft"), "--dtype", bad])
        assert "expected float32, bfloat16 or float16" in capsys.readouterr().err
    assert main(["convert", str(source), str(tmp_path / "x.onnx")]) == 2
    assert "or .pth, .pt, .bin or .ckpt" in capsys.readouterr().err
    assert not list(tmp_path.glob("x.*"))


def test_files_are_read_by_content_and_sft_is_safetensors(tmp_path, capsys):
    """ComfyUI names safetensors ``.sft``; a renamed file keeps its format. Before 2026-11-28 the
    suffix chose the reader (and torch >= 2.13's own ``torch.load`` does so for ".safetensors")."""
    sd = random_state_dict(tiny_config(), seed=4)
    save_file(sd, str(tmp_path / "lua.sft"))
    torch.save({"params_ema": sd}, tmp_path / "lua_as.safetensors")  # a torch file, misnamed
    latents = torch.randn(1, 4, 5, 6)
    save_file({"latents": latents}, str(tmp_path / "in.bin"))
    torch.save({"latents": latents}, tmp_path / "in.safetensors")
    expected = lua_fast.load(sd).upscale(latents, scale=2)
    cases = [("lua.sft", "in.bin", "a.sft"), ("lua_as.safetensors", "in.safetensors", "b.pt"),
             ("lua.sft", "in.bin", "UP.SafeTensors")]  # suffixes in any case (a Windows habit)
    for weights, inp, out in cases:
        assert main(["upscale", "--weights", str(tmp_path / weights), "--input", str(tmp_path / inp),
                     "--output", str(tmp_path / out)]) == 0, capsys.readouterr().err
        assert torch.equal(lua_fast.cli.read_latents(tmp_path / out), expected)
    assert list(load_file(str(tmp_path / "a.sft"))) == ["latents"]  # .sft is written as safetensors
    assert list(load_file(str(tmp_path / "UP.SafeTensors"))) == ["latents"]
    assert main(["convert", str(tmp_path / "lua_as.safetensors"), str(tmp_path / "c.sft")]) == 0
    assert set(load_file(str(tmp_path / "c.sft"))) == set(sd)
    assert main(["convert", str(tmp_path / "lua_as.safetensors"), str(tmp_path / "D.SFT")]) == 0
    assert set(load_file(str(tmp_path / "D.SFT"))) == set(sd)


def test_cli_errors_are_reported_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    torch.save([1, 2], bad)
    assert main(["convert", str(bad), str(tmp_path / "o.safetensors")]) == 2
    assert "not a LUA checkpoint" in capsys.readouterr().err
    sd = random_state_dict(tiny_config(), seed=4)
    torch.save(sd, tmp_path / "w.pth")
    save_file({"a": torch.zeros(1, 4, 4, 4), "b": torch.zeros(1)}, str(tmp_path / "two.safetensors"))
    args = ["upscale", "--weights", str(tmp_path / "w.pth"), "--input", str(tmp_path / "two.safetensors"),
            "--output", str(tmp_path / "o.pt")]
    assert main(args) == 2
    assert "no tensor under key 'latents'" in capsys.readouterr().err
    assert main(args + ["--key", "a", "--scale", "3"]) == 2
    assert "unsupported scale 3" in capsys.readouterr().err


def _comfyui_load_latent(path):
    """ComfyUI's LoadLatent node, as its source reads a .latent file."""
    latent = load_file(str(path), device="cpu")
    multiplier = 1.0
    if "latent_format_version_0" not in latent:
        multiplier = 1.0 / 0.18215
    return latent["latent_tensor"].float() * multiplier


def test_comfyui_latent_files_round_trip(tmp_path, capsys):
    """ComfyUI's SaveLatent writes ``.latent`` safetensors: ``latent_tensor`` and an empty
    ``latent_format_version_0`` marker; its LoadLatent divides a file without the marker by 0.18215.
    Before 2026-11-28 lua-fast needed --key latent_tensor to read one, refused to write ``.latent``,
    and read a marker-less (legacy) file 5.49x too large."""
    sd = random_state_dict(tiny_config(), seed=4)
    torch.save(sd, tmp_path / "w.pth")
    latents = torch.randn(2, 4, 7, 9)
    save_file({"latent_tensor": latents, "latent_format_version_0": torch.tensor([])}, str(tmp_path / "in.latent"))
    up = lua_fast.load(sd)
    args = ["upscale", "--weights", str(tmp_path / "w.pth"), "--input", str(tmp_path / "in.latent"),
            "--output", str(tmp_path / "out.latent")]
    assert main(args) == 0, capsys.readouterr().err
    written = load_file(str(tmp_path / "out.latent"))
    assert set(written) == {"latent_tensor", "latent_format_version_0"} and written["latent_format_version_0"].numel() == 0
    assert torch.equal(_comfyui_load_latent(tmp_path / "out.latent"), up.upscale(latents))  # what ComfyUI loads
    assert torch.equal(lua_fast.cli.read_latents(tmp_path / "out.latent"), up.upscale(latents))

    # A legacy file (no marker) holds SD 1.x-scaled latents: read as ComfyUI reads it.
    save_file({"latent_tensor": latents}, str(tmp_path / "old.latent"))
    assert torch.equal(lua_fast.cli.read_latents(tmp_path / "old.latent"), _comfyui_load_latent(tmp_path / "old.latent"))
    assert main(args[:4] + [str(tmp_path / "old.latent"), "--output", str(tmp_path / "old_up.safetensors")]) == 0
    assert torch.equal(load_file(str(tmp_path / "old_up.safetensors"))["latents"],
                       up.upscale(latents.float() * (1.0 / 0.18215)))


def test_one_latent_without_its_batch_dimension_keeps_its_rank(tmp_path, capsys):
    """A (C, H, W) file (a pipeline's ``latents[0]``) was refused by lua-fast upscale before
    2026-11-28 ("wrong rank"); it is upscaled as a batch of one and written back as (C, sH, sW).
    A 3-D tensor whose first side is not the channel count still gets the upscaler's error."""
    sd = random_state_dict(tiny_config(), seed=4)
    torch.save(sd, tmp_path / "w.pth")
    one = torch.randn(4, 6, 5)
    save_file({"latents": one}, str(tmp_path / "one.safetensors"))
    args = ["upscale", "--weights", str(tmp_path / "w.pth"), "--input", str(tmp_path / "one.safetensors"),
            "--output", str(tmp_path / "up.pt"), "--scale", "4"]
    assert main(args) == 0, capsys.readouterr().err
    assert "(4, 6, 5) -> (4, 24, 20) x4" in capsys.readouterr().out
    assert torch.equal(lua_fast.cli.read_latents(tmp_path / "up.pt"), lua_fast.load(sd).upscale(one[None], scale=4)[0])
    save_file({"latents": torch.randn(1, 30, 16)}, str(tmp_path / "packed.safetensors"))  # FLUX-packed-like
    assert main(args[:4] + [str(tmp_path / "packed.safetensors"), "--output", str(tmp_path / "p.pt")]) == 2
    assert "latents must be 4-D" in capsys.readouterr().err


def test_a_reader_that_closes_the_pipe_is_not_an_error():
    """``lua-fast info | head -1``: before 2026-11-28 the closed pipe was reported as
    "lua-fast info: error: [Errno 32] Broken pipe" with status 2. Now nothing is printed and the
    status is 141, a writer killed by SIGPIPE, as ``yes | head`` gives."""
    proc = subprocess.Popen([sys.executable, "-m", "lua_fast", "info"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child writes (its imports take a second)
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, stderr
    assert stderr == ""


def test_several_inputs_into_an_output_dir(tmp_path, capsys):
    """``--input`` takes several files with ``--output-dir`` (the model loaded once; outputs named
    as the Ray job names them); a bad file is reported and the others are still written (status 2).
    New on 2026-11-28: one file per process before."""
    sd = random_state_dict(tiny_config(), seed=4)
    torch.save(sd, tmp_path / "w.pth")
    gen = torch.Generator().manual_seed(2)
    a, b, c = torch.randn(2, 4, 6, 7, generator=gen), torch.randn(4, 5, 9, generator=gen), torch.randn(1, 4, 8, 8, generator=gen)
    save_file({"latents": a}, str(tmp_path / "a.safetensors"))
    torch.save(b, tmp_path / "b.pt")
    save_file({"latent_tensor": c, "latent_format_version_0": torch.tensor([])}, str(tmp_path / "c.latent"))
    (tmp_path / "d.safetensors").write_bytes(b"not a safetensors file")
    inputs = [str(tmp_path / n) for n in ("a.safetensors", "b.pt", "d.safetensors", "c.latent")]
    out = tmp_path / "out" / "x2"  # created
    assert main(["upscale", "--weights", str(tmp_path / "w.pth"), "--input", *inputs, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {inputs[2]}: " in err and "1 of 4 inputs failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.x2.safetensors", "b.x2.safetensors", "c.x2.latent"]
    up = lua_fast.load(sd)
    assert torch.equal(load_file(str(out / "a.x2.safetensors"))["latents"], up.upscale(a))
    assert torch.equal(load_file(str(out / "b.x2.safetensors"))["latents"], up.upscale(b[None])[0])
    assert torch.equal(load_file(str(out / "c.x2.latent"))["latent_tensor"], up.upscale(c))
    # all good: status 0
    assert main(["upscale", "--weights", str(tmp_path / "w.pth"), "--input", inputs[0], inputs[1],
                 "--output-dir", str(out), "--scale", "4"]) == 0
    assert (out / "a.x4.safetensors").exists() and (out / "b.x4.safetensors").exists()


def test_a_folder_or_a_pattern_stands_for_its_latents_files(tmp_path, capsys, monkeypatch):
    """``--input latents/`` was "is a directory, not a latents file", and a pattern the shell did not
    expand (Windows' cmd and PowerShell, a quoted one) "latents file not found: *.pt" (new on
    2026-11-29). A folder's latents files are read (the weights beside them left out); a folder
    without any, a pattern matching none, or --output-dir the input folder are refused before the
    weights are read."""
    sd = random_state_dict(tiny_config(), seed=4)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    torch.save(sd, src / "w.pth")  # the weights in the folder: not an input
    gen = torch.Generator().manual_seed(6)
    z = {n: torch.randn(1, 4, 6, 5 + i, generator=gen) for i, n in enumerate(("a", "b", "c"))}
    save_file({"latents": z["a"]}, str(src / "a.safetensors"))
    torch.save(z["b"], src / "b.PT")  # any case
    save_file({"latents": z["c"]}, str(src / "sub" / "c.safetensors"))  # not a subfolder's files
    (src / "notes.txt").write_text("not latents")
    up = lua_fast.load(sd)
    weights = str(src / "w.pth")

    def outputs(folder):
        return {p.name: load_file(str(p))["latents"] for p in sorted(folder.iterdir())}

    assert main(["upscale", "--weights", weights, "--input", str(src), "--output-dir", str(tmp_path / "o1")]) == 0
    got = outputs(tmp_path / "o1")
    assert list(got) == ["a.x2.safetensors", "b.x2.safetensors"]
    assert torch.equal(got["a.x2.safetensors"], up.upscale(z["a"])) and torch.equal(got["b.x2.safetensors"], up.upscale(z["b"]))
    monkeypatch.chdir(tmp_path)
    pattern = str(Path("src") / "*" / "*.safetensors")  # relative, as typed; the shell left it alone
    assert main(["upscale", "--weights", weights, "--input", pattern, "--output-dir", "o2"]) == 0
    assert list(outputs(tmp_path / "o2")) == ["c.x2.safetensors"]
    assert main(["upscale", "--weights", weights, "--input", str(src / "[ab].*"), "--output-dir", "o3"]) == 0
    assert list(outputs(tmp_path / "o3")) == ["a.x2.safetensors", "b.x2.safetensors"]
    capsys.readouterr()
    monkeypatch.setattr(lua_fast, "load", lambda *a, **k: pytest.fail("the weights were read"))
    (tmp_path / "empty").mkdir()
    only_weights = tmp_path / "only"
    only_weights.mkdir()
    torch.save(sd, only_weights / "w.pth")
    for inputs, out, message in [
        ([str(tmp_path / "empty")], "o4", "is a folder without latents files"),
        ([str(only_weights)], "o4", "without latents files (.safetensors, .sft, .pt, .pth, .latent) (other than the weights)"),
        (["src/*.npy"], "o4", "--input src/*.npy: no file matches this pattern"),
        ([str(src)], str(src), f"--output-dir {src} is an --input folder"),
    ]:
        w = str(only_weights / "w.pth") if "only" in inputs[0] else weights
        assert main(["upscale", "--weights", w, "--input", *inputs, "--output-dir", out]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o4").exists()


def test_weights_given_as_latents_are_named_as_such(tmp_path, capsys):
    """A checkpoint passed as --input listed all of its tensor names (556 for the released model)."""
    sd = random_state_dict(tiny_config(), seed=4)
    save_file(sd, str(tmp_path / "w.safetensors"))
    assert main(["upscale", "--weights", str(tmp_path / "w.safetensors"), "--input", str(tmp_path / "w.safetensors"),
                 "--output", str(tmp_path / "o.safetensors"), "--force"]) == 2
    err = capsys.readouterr().err
    assert f"... ({len(sd)} in all); it is a LUA checkpoint" in err and "pass it as --weights" in err
    assert len(err) < 600, err


def test_skip_existing_resumes_an_output_dir_run(tmp_path, capsys, monkeypatch):
    """A run over many inputs that stopped part way redid every input before 2026-11-29; with
    --skip-existing, outputs already in --output-dir (whole: writes are atomic) are kept, an output
    that does not read is made again, and with nothing left to do the weights are not even read."""
    torch.save(random_state_dict(tiny_config(), seed=4), tmp_path / "w.pth")
    gen = torch.Generator().manual_seed(5)
    for name in "abc":
        save_file({"latents": torch.randn(1, 4, 6, 7, generator=gen)}, str(tmp_path / f"{name}.safetensors"))
    save_file({"latent_tensor": torch.randn(1, 4, 5, 5, generator=gen), "latent_format_version_0": torch.tensor([])},
              str(tmp_path / "d.latent"))
    out = tmp_path / "out"
    out.mkdir()
    kept = torch.full((1, 4, 12, 14), 3.0)
    save_file({"latents": kept}, str(out / "a.x2.safetensors"))
    (out / "b.x2.safetensors").write_bytes(b"cut short")
    run = ["upscale", "--weights", str(tmp_path / "w.pth"), "--output-dir", str(out), "--skip-existing", "--input",
           *(str(tmp_path / n) for n in ("a.safetensors", "b.safetensors", "c.safetensors", "d.latent"))]
    assert main(run) == 0
    printed = capsys.readouterr().out
    assert "a.x2.safetensors exists (--skip-existing)" in printed and printed.count("exists") == 1
    assert torch.equal(load_file(str(out / "a.x2.safetensors"))["latents"], kept)
    assert load_file(str(out / "b.x2.safetensors"))["latents"].shape == (1, 4, 12, 14)  # made again
    monkeypatch.setattr(lua_fast, "load", lambda *a, **k: pytest.fail("the weights were read with nothing to do"))
    assert main(run) == 0 and capsys.readouterr().out.count("exists (--skip-existing)") == 4
    assert main(["upscale", "--weights", "w.pth", "--input", str(tmp_path / "a.safetensors"), "--output",
                 str(tmp_path / "o.safetensors"), "--skip-existing"]) == 2
    assert "--skip-existing resumes an --output-dir run" in capsys.readouterr().err


def test_ctrl_c_ends_with_one_line_and_status_130(tmp_path, capsys, monkeypatch):
    torch.save(random_state_dict(tiny_config(), seed=4), tmp_path / "w.pth")
    save_file({"latents": torch.randn(1, 4, 6, 7)}, str(tmp_path / "a.safetensors"))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lua_fast.Upscaler, "upscale", interrupted)
    code = main(["upscale", "--weights", str(tmp_path / "w.pth"), "--input", str(tmp_path / "a.safetensors"),
                 "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 130 and err.strip() == "lua-fast upscale: interrupted"
    assert list((tmp_path / "out").iterdir()) == []  # nothing half written


def test_a_repeated_list_option_gathers_every_value(tmp_path, capsys):
    """``--input a --input b`` read only b (argparse's "store" keeps the last), and a was skipped
    with status 0; ``--scales 2 --scales 4`` the same. Both now gather every value."""
    torch.save(random_state_dict(tiny_config(), seed=4), tmp_path / "w.pth")
    for name in ("a", "b"):
        save_file({"latents": torch.randn(1, 4, 6, 7)}, str(tmp_path / f"{name}.safetensors"))
    out = tmp_path / "out"
    assert main(["upscale", "--weights", str(tmp_path / "w.pth"), "--input", str(tmp_path / "a.safetensors"),
                 "--input", str(tmp_path / "b.safetensors"), "--output-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.x2.safetensors", "b.x2.safetensors"]
    assert main(["export", "--weights", str(tmp_path / "w.pth"), "--output", str(tmp_path / "m.onnx"),
                 "--scales", "2", "--scales", "X4"]) == 2  # (head names too, since 2026-11-29)
    assert "ONNX export takes one --scales value" in capsys.readouterr().err
    from lua_fast.cli import build_parser

    assert build_parser().parse_args(["export", "--weights", "w", "--output", "m.pt2", "--scales", "x2", "4"]).scales == [2, 4]


def test_an_input_the_device_cannot_hold_is_reported_and_the_others_written(tmp_path, capsys, monkeypatch):
    """An out-of-memory error (CUDA's, or the CPU allocator's refusal) ended `lua-fast upscale` with a
    traceback before 2026-11-28, losing the inputs after it; now it is that input's one-line error,
    naming --tile auto."""
    from lua_fast.upscaler import Upscaler

    real = Upscaler.upscale

    def small_device(self, latents, *args, tile=None, **kwargs):  # holds 8x8 latents, or tiles
        if tile is None and latents.shape[-1] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)\nmore")
        return real(self, latents, *args, tile=tile, **kwargs)

    monkeypatch.setattr(Upscaler, "upscale", small_device)
    torch.save(random_state_dict(tiny_config(), seed=4), tmp_path / "w.pth")
    gen = torch.Generator().manual_seed(2)
    save_file({"latents": torch.randn(1, 4, 16, 16, generator=gen)}, str(tmp_path / "big.safetensors"))
    save_file({"latents": torch.randn(1, 4, 8, 8, generator=gen)}, str(tmp_path / "small.safetensors"))
    inputs = [str(tmp_path / "big.safetensors"), str(tmp_path / "small.safetensors")]
    base = ["upscale", "--weights", str(tmp_path / "w.pth"), "--input"]
    assert main([*base, *inputs, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (f"error: {inputs[0]}: out of memory upscaling a (1, 4, 16, 16) latent x2 on cpu (CUDA out of memory. "
            "Tried to allocate 20.00 GiB (simulated)): pass --tile auto to upscale it in tiles") in err
    assert "Traceback" not in err and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small.x2.safetensors"]
    assert main([*base, inputs[0], "--output", str(tmp_path / "big.x2.safetensors")]) == 2  # one input: status 2
    assert "out of memory upscaling" in capsys.readouterr().err
    assert main([*base, inputs[0], "--output", str(tmp_path / "big.x2.safetensors"), "--tile", "AUTO"]) == 0  # (any case)


@pytest.mark.parametrize("extra,message", [
    (["--output-dir", "OUT", "--output", "o.pt"], "give --output (one input) or --output-dir"),
    ([], "give --output (one input) or --output-dir"),
    (["--output", "o.pt", "+b.pt"], "--output takes one --input, got 2"),
    (["--output-dir", "OUT", "+a.safetensors"], "would write the same output"),
    (["--output-dir", "IN"], "is the same file as --input"),
])
def test_several_inputs_are_checked_before_anything_runs(tmp_path, capsys, extra, message):
    """A name two inputs would share (a.pt, a.safetensors), an output over an input, and --output
    with several inputs are refused before the weights are read (the weights file is missing)."""
    (tmp_path / "a.pt").write_bytes(b"")
    (tmp_path / "b.pt").write_bytes(b"")
    (tmp_path / "a.safetensors").write_bytes(b"")
    (tmp_path / "a.x2.safetensors").write_bytes(b"")  # IN: an input that a's output would overwrite
    inputs = [str(tmp_path / "a.pt"), str(tmp_path / "a.x2.safetensors")] if "IN" in extra else [str(tmp_path / "a.pt")]
    inputs += [str(tmp_path / e[1:]) for e in extra if e.startswith("+")]
    options = [str(tmp_path) if e == "IN" else str(tmp_path / e) if e in ("OUT", "o.pt") else e
               for e in extra if not e.startswith("+")]
    args = ["upscale", "--weights", str(tmp_path / "missing.pth"), "--input", *inputs, *options]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_info_warns_when_pytorch_runs_more_threads_than_the_cpu_quota(monkeypatch, capsys):
    """PyTorch starts a thread per core of the host whatever the container's CPU quota: in a cgroup
    with a 1-CPU quota on this 2-core machine, 2 threads took 2.29 s per 32x32 forward against 2.0 s
    with 1 (released config); on a big host with a small quota the throttling costs more. New on
    2026-11-29: `info` says so."""
    from lua_fast import host_memory

    monkeypatch.setattr(host_memory, "cpu_quota", lambda: 1.5)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert main(["info"]) == 0
    assert ("a CPU quota of 1.5 CPUs (cgroup) and 8 PyTorch threads: the kernel throttles the extra threads; "
            "torch.set_num_threads(2) or OMP_NUM_THREADS=2") in capsys.readouterr().out
    monkeypatch.setattr(host_memory, "cpu_quota", lambda: 8.0)
    assert main(["info"]) == 0 and "CPU quota" not in capsys.readouterr().out


def test_device_auto_picks_cuda_when_a_gpu_is_visible(monkeypatch, capsys):
    """--device auto: a GPU box need not name it (the default stays cpu, as load's does)."""
    from lua_fast.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["demo", "--device", "auto"]).device == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for value in ("auto", "AUTO"):
        assert parse(["demo", "--device", value]).device == "cuda"
        assert parse(["upscale", "--weights", "w", "--input", "z", "--device", value]).device == "cuda"
    assert parse(["demo"]).device == "cpu" and parse(["demo", "--device", "cuda:1"]).device == "cuda:1"
    assert parse(["bench", "--device", "Auto"]).device == "cuda"  # (bench too, since 2026-11-29)
    for command in (["demo"], ["upscale", "--weights", "w", "--input", "z"], ["bench"]):
        with pytest.raises(SystemExit):  # before 2026-11-29 a traceback ("Cannot copy out of meta tensor")
            parse([*command, "--device", "META"])
        assert "the meta device holds shapes only" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["demo", "--small", "--device", "auto", "--repeat", "1"]) == 0
    assert "backend: torch on cpu" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == (f"lua-fast {lua_fast.__version__} (torch {torch.__version__}; "
                                               "`lua-fast info` for the rest)")


def test_several_scales_share_one_trunk_pass(tmp_path, capsys, monkeypatch):
    """``--scale 2 4`` with --output-dir writes an output per scale from one forward per input (the
    trunk is 94% of a released-config x2 forward's FLOPs at 64x64); before 2026-11-29 --scale took
    one value and both outputs meant two runs, two loads and two trunk passes."""
    sd = random_state_dict(tiny_config(), seed=6)
    torch.save(sd, tmp_path / "w.pth")
    gen = torch.Generator().manual_seed(7)
    z = {n: torch.randn(1, 4, 6, 9, generator=gen) for n in "ab"}
    for n, t in z.items():
        save_file({"latents": t}, str(tmp_path / f"{n}.safetensors"))
    asked, upscale = [], lua_fast.Upscaler.upscale

    def recorded(self, latents, scale=2, **kwargs):
        asked.append(scale)
        return upscale(self, latents, scale=scale, **kwargs)

    monkeypatch.setattr(lua_fast.Upscaler, "upscale", recorded)
    out = tmp_path / "out"
    inputs = [str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]
    run = ["upscale", "--weights", str(tmp_path / "w.pth"), "--output-dir", str(out), "--input", *inputs]
    assert main(run + ["--scale", "2", "X4", "--scale", "x2"]) == 0  # (head names too, any case)
    assert asked == [(2, 4), (2, 4)]  # one forward per input, each scale once
    up = lua_fast.load(sd)
    for n, t in z.items():
        for s in (2, 4):
            assert torch.equal(load_file(str(out / f"{n}.x{s}.safetensors"))["latents"], up.upscale(t, scale=s))
    assert len(capsys.readouterr().out.splitlines()) == 4  # a line per output
    # Resumed: only what is missing runs
    (out / "b.x4.safetensors").unlink()
    asked.clear()
    assert main(run + ["--scale", "2", "4", "--skip-existing"]) == 0
    assert asked == [4] and (out / "b.x4.safetensors").exists()
    # --output names one file: one scale
    code = main(["upscale", "--weights", str(tmp_path / "w.pth"), "--input", inputs[0], "--output",
                 str(tmp_path / "o.safetensors"), "--scale", "2", "4"])
    assert code == 2 and "--output writes one scale" in capsys.readouterr().err
    assert main(["upscale", "--weights", str(tmp_path / "w.pth"), "--input", *inputs, "--output-dir",
                 str(tmp_path / "o2"), "--scale", "2", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unsupported scale (2, 3)" in err[0], err  # once, not once per input
    with pytest.raises(SystemExit):
        main(["upscale", "--weights", "w.pth", "--input", inputs[0], "--output-dir", "o3", "--scale", "x"])
    assert "expected a scale such as 2 or x2, got 'x'" in capsys.readouterr().err
    # Two inputs sharing a stem are named once, not once per scale
    (tmp_path / "d").mkdir()
    save_file({"latents": z["a"]}, str(tmp_path / "d" / "a.safetensors"))
    assert main(["upscale", "--weights", str(tmp_path / "w.pth"), "--input", inputs[0], str(tmp_path / "d" / "a.safetensors"),
                 "--output-dir", str(tmp_path / "o4"), "--scale", "2", "4"]) == 2
    assert capsys.readouterr().err.count("a.safetensors") == 2


def test_a_saved_comfyui_latent_dict_and_a_lone_tensor_are_read(tmp_path):
    """ComfyUI's LATENT dict saved with torch.save ({"samples", "batch_index", "noise_mask"}) and a
    dict whose one tensor sits beside other values: before 2026-11-29 "has no tensor under key
    'latents'; it holds 'batch_index', 'samples' (use --key)"."""
    from lua_fast.files import read_latents

    z, mask = torch.randn(1, 4, 6, 6), torch.ones(1, 1, 48, 48)
    cases = {"latent_dict.pt": {"samples": z, "batch_index": [0], "noise_mask": mask},
             "with_metadata.pt": {"z": z, "prompt": "a cat", "steps": 20}}
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        assert torch.equal(read_latents(tmp_path / name), z), name
    torch.save({"a": z, "b": mask}, tmp_path / "two.pt")  # two tensors: which is meant is the user's to say
    with pytest.raises(lua_fast.InputError, match="it holds 'a', 'b' \\(use --key\\)"):
        read_latents(tmp_path / "two.pt")
    assert torch.equal(read_latents(tmp_path / "two.pt", key="b"), mask)


@pytest.mark.parametrize("args, message", [
    (["demo", "--small", "--repeat", "-1"], "argument --repeat: expected an int >= 1, got -1"),  # (UnboundLocalError)
    (["demo", "--small", "--repeat", "0"], "argument --repeat: expected an int >= 1, got 0"),  # ("no median for empty data")
    (["demo", "--small", "--size", "-1"], "argument --size: expected an int >= 0, got -1"),  # (a RuntimeError traceback)
    (["demo", "--small", "--batch", "0"], "argument --batch: expected an int >= 1, got 0"),
    (["export", "--weights", "w.pth", "--output", "m.pt2", "--max-batch", "0"], "argument --max-batch: expected an int >= 1"),
])
def test_counts_and_sizes_below_their_least_are_refused_while_parsing(args, message, capsys):
    """Before 2026-11-29 these ran and failed inside: tracebacks or statistics' own message."""
    with pytest.raises(SystemExit):
        main(args)
    assert message in capsys.readouterr().err



def test_upscale_takes_a_memory_budget_for_tile_auto(tmp_path, capsys, monkeypatch):
    """`--memory-budget SIZE` reaches tile="auto" (before 2026-11-29 only the Python API could set
    it): 8GiB, 512MiB, 1.5GB or bytes; refused without --tile auto and for a malformed size."""
    from lua_fast.cli import _byte_size
    from lua_fast.upscaler import Upscaler

    assert [_byte_size(v) for v in ("8GiB", "8g", "512 MiB", "1.5GB", "1000", "2e3", "64kb")] == \
        [8 * 2**30, 8 * 2**30, 512 * 2**20, 1_500_000_000, 1000, 2000, 64_000]
    for bad in ("", "GiB", "8 gigs", "-1GiB", "0", "0.1"):
        with pytest.raises(argparse.ArgumentTypeError):
            _byte_size(bad)
    seen = []
    real = Upscaler.upscale

    def spy(self, latents, *args, **kwargs):
        seen.append(kwargs.get("memory_budget"))
        return real(self, latents, *args, **kwargs)

    monkeypatch.setattr(Upscaler, "upscale", spy)
    torch.save(random_state_dict(tiny_config(), seed=4), tmp_path / "w.pth")
    save_file({"latents": torch.randn(2, 4, 16, 16)}, str(tmp_path / "z.safetensors"))
    base = ["upscale", "--weights", str(tmp_path / "w.pth"), "--input", str(tmp_path / "z.safetensors"),
            "--output", str(tmp_path / "o.safetensors")]
    assert main([*base, "--tile", "auto", "--memory-budget", "1GiB"]) == 0 and seen == [2**30]
    assert main([*base, "--memory-budget", "1GiB"]) == 2
    assert "--memory-budget applies to --tile auto" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:  # refused while parsing
        main([*base, "--tile", "auto", "--memory-budget", "lots"])
    assert done.value.code == 2 and "expected a size such as 8GiB" in capsys.readouterr().err
