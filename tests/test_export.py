"""Production runtimes (issue 15): AOTInductor packages with dynamic shapes, loaded in a fresh
process, and ONNX verified with ONNX Runtime at sizes other than the export size."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import lua_fast
from lua_fast import InputError, LUAConfig
from lua_fast.cli import main
from conftest import random_state_dict, rel_err

ROOT = Path(__file__).resolve().parents[1]
# One residual group of an unshifted and a shifted block: a second group repeats both (it cost 20 of the
# package fixture's 77 s of Inductor time on the development CPU).
CONFIG = LUAConfig(in_channels=4, out_channels=4, embed_dim=16, depths=(2,), num_heads=(2,), window_size=8,
                   head_width=8, img_size=16)
# Sizes and batches the packages were not traced at (the export example is batch 2, 16x24).
CASES = [(1, 13, 21), (3, 24, 16)]


@pytest.fixture(scope="module")
def sd():
    return random_state_dict(CONFIG, seed=51, table_std=0.5)


@pytest.fixture(scope="module")
def packages(sd, tmp_path_factory):
    from lua_fast.export import export_package

    folder = tmp_path_factory.mktemp("pt2")
    out = {}
    # (the torch one under an upper-case suffix: before 2026-11-29 load took "X.PT2" for a checkpoint)
    for backend, name in (("reference", "reference.pt2"), ("torch", "TORCH.PT2")):
        up = lua_fast.load(sd, backend=backend)
        out[backend] = export_package(up, folder / name, max_batch=4, max_side=64)
    assert sorted(p.name for p in folder.iterdir()) == ["TORCH.PT2", "reference.pt2"]  # no temporary left
    return out


LOAD_SCRIPT = r"""
import sys, torch, lua_fast
package, latents, result = sys.argv[1:4]
up = lua_fast.load(package)
zs = torch.load(latents)
torch.save({"repr": repr(up), "info": up.package_info, "out": [up.upscale(z, scale=(2, 4)) for z in zs]}, result)
"""


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_aotinductor_package_in_a_fresh_process(backend, packages, sd, tmp_path):
    gen = torch.Generator().manual_seed(3)
    zs = [torch.randn(b, 4, h, w, generator=gen) for b, h, w in CASES]
    torch.save(zs, tmp_path / "z.pt")
    proc = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, packages[backend], str(tmp_path / "z.pt"),
                           str(tmp_path / "out.pt")], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    assert f"aotinductor:{backend}" in got["repr"]
    info = got["info"]
    assert info["lua_fast"] == lua_fast.__version__ and info["precision"] == "fp32" and info["backend"] == backend
    assert LUAConfig(**info["config"]) == CONFIG and info["scales"] == [2, 4]
    eager = lua_fast.load(sd, backend=backend)
    for z, out in zip(zs, got["out"]):
        want = eager.upscale(z, scale=(2, 4))
        for s in (2, 4):
            assert out[s].shape == want[s].shape
            assert rel_err(out[s], want[s]) <= 1e-5, (backend, tuple(z.shape), s)


def test_package_contract_and_limits(packages):
    up = lua_fast.load(packages["reference"])
    assert up.reference_model is None and up.config == CONFIG and up.dtype == torch.float32
    assert up.upscale(torch.randn(1, 4, 5, 7), scale="x2").shape == (1, 4, 10, 14)  # padded + cropped
    with pytest.raises(InputError, match="batches up to 4 and sides up to 64"):
        up.upscale(torch.randn(5, 4, 8, 8))
    with pytest.raises(InputError, match="16 channels but this model expects 4"):
        up.upscale(torch.randn(1, 16, 8, 8))
    with pytest.raises(ValueError, match="fixes its backend and precision"):
        lua_fast.load(packages["reference"], precision="bf16")
    with zipfile.ZipFile(packages["reference"]) as z:
        names = [n for n in z.namelist() if n.endswith("lua_fast.json")]
        assert names and json.loads(z.read(names[0]))["config"]["embed_dim"] == 16
    # Copies (multiprocessing's spawn pickles it) open the package again; before 2026-11-29 pickling
    # raised "cannot pickle 'torch._C._aoti.AOTIModelPackageLoader' object"
    import copy
    import pickle

    z = torch.randn(2, 4, 13, 9)
    want = up.upscale(z)
    for again in (pickle.loads(pickle.dumps(up)), copy.deepcopy(up)):
        assert again.model.runner is not up.model.runner and torch.equal(again.upscale(z), want)
        assert repr(again) == repr(up) and again.package_info == up.package_info


def test_onnx_matches_the_reference_at_other_sizes(sd, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    assert main(["export", "--weights", str(tmp_path / "w.pth"), "--output", str(tmp_path / "m.onnx")]) == 2  # missing
    torch.save({"params_ema": sd}, tmp_path / "w.pth")
    assert main(["export", "--weights", str(tmp_path / "w.pth"), "--output", str(tmp_path / "m.onnx"),
                 "--scales", "4"]) == 0
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    up = lua_fast.load(sd, backend="reference")
    gen = torch.Generator().manual_seed(9)
    # Export size: batch 2, 13x19. Any size runs: padding and crop are in the graph (before
    # 2026-11-28 a side off the window grid failed in ONNX Runtime's Reshape). One window, several,
    # padded or not, and sides too short for reflect padding.
    for b, h, w in [(1, 8, 8), (3, 24, 16), (2, 13, 21), (1, 1, 5), (1, 3, 40)]:
        z = torch.randn(b, 4, h, w, generator=gen)
        out = torch.from_numpy(session.run(None, {"latents": z.numpy()})[0])
        assert rel_err(out, up.upscale(z, scale=4)) <= 1e-5, (b, h, w)


def test_onnx_in_half_precisions(sd, tmp_path, capsys):
    """float16 exports run in ONNX Runtime with about the eager float16 error. bfloat16 needs opset 22
    (Conv has no bfloat16 before it): before 2026-11-28 a bf16 export wrote an opset-18 file that
    no ONNX runtime loads. (ONNX Runtime's CPU provider has no bfloat16 Conv even at opset 22, so
    that file is only checked with onnx.checker here.)"""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from lua_fast.export import ExportError, export_onnx

    z = torch.randn(2, 4, 13, 21, generator=torch.Generator().manual_seed(3))
    want = lua_fast.load(sd, backend="reference").upscale(z)
    half = lua_fast.load(sd, dtype=torch.float16, backend="reference")
    export_onnx(half, tmp_path / "fp16.onnx")
    session = ort.InferenceSession(str(tmp_path / "fp16.onnx"), providers=["CPUExecutionProvider"])
    out = torch.from_numpy(session.run(None, {"latents": z.half().numpy()})[0]).float()
    assert rel_err(out, want) <= 2 * rel_err(half.upscale(z).float(), want) + 1e-4

    brain = lua_fast.load(sd, dtype=torch.bfloat16, backend="reference")
    with pytest.raises(ExportError, match="opset >= 22"):
        export_onnx(brain, tmp_path / "bf16_18.onnx", opset=18)
    torch.save({"params_ema": sd}, tmp_path / "w.pth")
    assert main(["export", "--weights", str(tmp_path / "w.pth"), "--output", str(tmp_path / "bf16.onnx"),
                 "--dtype", "bfloat16", "--scales", "2"]) == 0
    assert "reference numerics in bfloat16" in capsys.readouterr().out
    model = onnx.load(str(tmp_path / "bf16.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 22
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16
    onnx.checker.check_model(model, full_check=True)


def test_exports_are_written_atomically(tmp_path, sd, monkeypatch):
    """An export that fails while writing (a full disk, Ctrl-C) leaves the file that was there, and
    an ONNX model the checker refuses never takes the path's name; before 2026-11-29 both wrote in
    place. (The compile steps are stubbed: this is about the write.)"""
    import types

    import torch.export.pt2_archive._package as pt2
    from lua_fast import export

    up = lua_fast.load(sd, backend="reference")
    target = tmp_path / "model.PT2"
    target.write_bytes(b"the previous package")
    monkeypatch.setattr(export, "_export", lambda *a: (types.SimpleNamespace(module=lambda: None), [2], None))
    monkeypatch.setattr(torch._inductor, "aot_compile", lambda *a, **k: [])

    def half_written(f, **kwargs):
        f.write(b"half a package")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pt2, "package_pt2", half_written)
    with pytest.raises(OSError, match="No space left"):
        export.export_package(up, target)
    assert target.read_bytes() == b"the previous package" and [p.name for p in tmp_path.iterdir()] == ["model.PT2"]
    (tmp_path / "folder.pt2").mkdir()  # (before 2026-11-29 "package not found")
    with pytest.raises(export.ExportError, match="is a directory, not an AOTInductor package"):
        lua_fast.load(tmp_path / "folder.pt2")

    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    program = types.SimpleNamespace(save=lambda path: Path(path).write_bytes(b"an invalid model"))
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: program)

    def refuse(path, full_check=False):
        assert Path(path).read_bytes() == b"an invalid model"  # checked where it was written
        raise onnx.checker.ValidationError("Field 'type' of 'value_info' is required but missing.")

    monkeypatch.setattr(onnx.checker, "check_model", refuse)
    with pytest.raises(export.ExportError, match="is invalid: Field 'type'"):
        export.export_onnx(up, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists() and not list(tmp_path.glob("*.partial"))


def test_a_package_that_does_not_load_says_what_wrote_it(tmp_path, monkeypatch):
    """A package from other software (another torch release's AOTInductor, a later lua_fast's
    metadata) was "not a lua_fast AOTInductor package", or a KeyError / TypeError, before
    2026-11-29; now the error names what wrote it and says to export it again."""
    import types

    import torch.export.pt2_archive._package as pt2
    from lua_fast.export import METADATA, ExportError

    foreign = {"lua_fast": "9.0.0", "torch": "3.1.0", "config": {"in_channels": 4, "new_field": 1}}
    with zipfile.ZipFile(tmp_path / "other.pt2", "w") as z:
        z.writestr("other/extra/" + METADATA, json.dumps(foreign))  # metadata, no model torch can load
    with pytest.raises(ExportError, match=r"other.pt2 is a lua_fast package \(written by lua_fast 9.0.0 with torch "
                                          r"3.1.0\) that this lua_fast .* cannot load .*export it again here"):
        lua_fast.load(tmp_path / "other.pt2")
    with zipfile.ZipFile(tmp_path / "plain.pt2", "w") as z:
        z.writestr("plain/data.pkl", b"")
    with pytest.raises(ExportError, match="plain.pt2 is not a lua_fast AOTInductor package"):
        lua_fast.load(tmp_path / "plain.pt2")
    monkeypatch.setattr(pt2, "load_pt2", lambda f: types.SimpleNamespace(
        extra_files={METADATA: json.dumps(foreign)}, aoti_runners={"model": object()}))
    with pytest.raises(ExportError, match=r"lua_fast.json \(written by lua_fast 9.0.0 with torch 3.1.0\) does not "
                                          r"read in lua_fast .*TypeError.*new_field"):
        lua_fast.load(tmp_path / "other.pt2")


def test_a_package_is_no_weights_file(tmp_path, sd, capsys):
    """A package where weights are wanted (convert, bench, LUAConfig.from_state_dict, another export)
    read as a "corrupted" torch.save checkpoint, and an export of a package failed inside
    torch.export, before 2026-11-29; both now say what the file is and what to pass."""
    from lua_fast.export import METADATA, ExportError, export_onnx, export_package

    package = tmp_path / "lua.pt2"
    with zipfile.ZipFile(package, "w") as z:
        z.writestr("lua/extra/" + METADATA, json.dumps({"lua_fast": "0.1.0", "scales": [2]}))
    says = "lua.pt2 is an exported AOTInductor package: it holds compiled code, not weights"
    with pytest.raises(lua_fast.CheckpointError, match=says):
        LUAConfig.from_state_dict(package)
    assert main(["convert", str(package), str(tmp_path / "w.safetensors")]) == 2
    assert says in capsys.readouterr().err
    up = lua_fast.load(sd)
    compiled = lua_fast.Upscaler.from_runner(up.model, up.config, up.device, up.precision, "aotinductor:torch")
    for export in (lambda: export_package(compiled, tmp_path / "again.pt2"), lambda: export_onnx(compiled, tmp_path / "m.onnx")):
        with pytest.raises(ExportError, match="needs the model's weights: load the checkpoint, not a .pt2 package"):
            export()


def test_export_arguments_are_read_as_upscale_reads_them_and_checked_first(tmp_path, sd, monkeypatch):
    """Before 2026-11-29: a head name failed inside torch.export (ONNX) or was refused (package);
    NumPy ints for the limits reached the package's JSON after the compile ("int64 is not JSON
    serializable"); a folder or a missing directory as the path failed after the export's work; an
    fp32 model asked for opset 10 was told "a bfloat16 model needs opset >= 18", and opset="18" was
    a TypeError. (The compile steps are stubbed where they would run.)"""
    import types

    import numpy as np

    from lua_fast import UsageError
    from lua_fast import export
    from lua_fast.export import ExportError, export_onnx, export_package

    up = lua_fast.load(sd, backend="reference")
    assert export._scale_ints(up, ["X4", np.int64(2), 2]) == (2, 4)
    with pytest.raises(InputError, match="unsupported scale 3: this model has heads"):
        export._scale_ints(up, [2, 3])
    calls = []
    monkeypatch.setattr(export, "_export", lambda up_, scales, mb, ms: calls.append((scales, mb, ms)) or
                        (types.SimpleNamespace(module=lambda: None), export._scale_ints(up_, scales), None))
    monkeypatch.setattr(torch._inductor, "aot_compile", lambda *a, **k: [])
    import torch.export.pt2_archive._package as pt2

    written = {}
    monkeypatch.setattr(pt2, "package_pt2", lambda f, **kw: written.update(json.loads(kw["extra_files"]["lua_fast.json"])))
    export_package(up, tmp_path / "p.pt2", scales=["x4", np.int64(2)], max_batch=np.int64(3), max_side=np.int32(32))
    assert written["scales"] == [2, 4] and (written["max_batch"], written["max_side"]) == (3, 32)
    (tmp_path / "d.pt2").mkdir()
    (tmp_path / "d.onnx").mkdir()
    for stem, says in ((tmp_path / "d", "is a directory; give a file path"), (tmp_path / "none" / "p", "does not exist")):
        with pytest.raises(UsageError, match=says):
            export_package(up, f"{stem}.pt2")
        with pytest.raises(UsageError, match=says):
            export_onnx(up, f"{stem}.onnx")
    assert len(calls) == 1  # neither bad path reached the export
    pytest.importorskip("onnxscript")
    with pytest.raises(ExportError, match=r"a float32 model needs ONNX opset >= 18 \(the least torch.onnx's"):
        export_onnx(up, tmp_path / "m.onnx", opset=10)
    with pytest.raises(InputError, match="opset must be an int, got '18'"):
        export_onnx(up, tmp_path / "m.onnx", opset="18")
    with pytest.raises(InputError, match="unsupported scale 'x8'"):
        export_onnx(up, tmp_path / "m.onnx", scale="x8")
    assert not list(tmp_path.glob("m.onnx*"))


def test_export_command_errors(tmp_path, sd):
    torch.save(sd, tmp_path / "w.pth")
    assert main(["export", "--weights", str(tmp_path / "w.pth"), "--output", str(tmp_path / "m.zip")]) == 2
    assert main(["export", "--weights", str(tmp_path / "w.pth"), "--output", str(tmp_path / "m.onnx"),
                 "--scales", "2", "4"]) == 2


def test_an_export_of_one_batch_or_small_sides_traces(sd):
    """``max_batch=1`` (batch-1 serving) failed in torch's Dim ("inconsistent min=1, max=1", a
    traceback from the CLI) and a ``max_side`` under three windows in torch.export's constraint
    solver ("24 not in range [8, 16]") before 2026-11-29: the traced example (batch 2, 2 x 3
    windows) did not fit the bounds. The graph's bounds now hold the example; the package's runner
    enforces the caller's (test_package_contract_and_limits)."""
    from lua_fast.export import _export, metadata

    up = lua_fast.load(sd, backend="reference")
    program, scales, _ = _export(up, None, 1, 12)  # (both at once: a trace takes seconds)
    x = torch.randn(2, 4, 24, 16)  # (module() also checks the trace's guards, which the package does not)
    assert torch.equal(program.module()(x)[0], up.model(x, scales)[scales[0]])
    assert metadata(up, scales, 1, 12)["max_batch"] == 1
    for max_batch, max_side, text in [(0, 64, "max_batch must be an int >= 1"),
                                      (4, 7, "max_side must be an int >= the window size 8")]:
        with pytest.raises(InputError, match=text):
            _export(up, None, max_batch, max_side)
