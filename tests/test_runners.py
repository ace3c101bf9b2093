"""Runners (one protocol for every back end) and the Runtime built on them: providers really got,
per-model precision and device selection, declared model I/O, input validation."""

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from rkd_edge.runtime import BundleError, Runtime
from rkd_edge.runtime.bundle import Bundle
from rkd_edge.runtime.runners import BACKENDS, create_runner, runner_class
from rkd_edge.runtime.runners.device import fingerprint
from rkd_edge.runtime.runners.torch_eager import TorchRunner
from tests.conftest import restamp_checkpoint, write_manifest_as_rkd_edge


def _copy(bundle, tmp_path, edit=None):
    """A copy of the bundle, its manifest edited by ``edit(manifest)`` (the manifest is not hash-covered)."""
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    if edit:
        m = json.loads((b / "manifest.json").read_text())
        edit(m)
        write_manifest_as_rkd_edge(b, m)
    return b


def _ort_has(provider: str) -> bool:
    import onnxruntime as ort

    return provider in ort.get_available_providers()


def test_registry_creates_every_backend_and_says_why_not():
    for name in BACKENDS:
        r = create_runner(name, "encoder", threads=1, run=None)
        assert r.backend == name and r.model == "encoder"
        why = r.available()
        assert why is None or (isinstance(why, str) and "\n" not in why and why)
    assert create_runner("onnxruntime").available() is None
    with pytest.raises(BundleError, match="unknown back end 'nope'"):
        runner_class("nope")


def test_runtime_package_and_onnx_runners_do_not_import_torch(tiny_bundle):
    code = (
        "import sys; import rkd_edge.runtime.runners as R; from rkd_edge.runtime import Runtime; "
        "[R.runner_class(n) for n in ('onnxruntime', 'tensorrt')]; "
        f"rt = Runtime({str(tiny_bundle)!r}); R.create_runner('tensorrt').available(); "
        "print('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr


def test_ort_runner_metadata_matches_manifest_and_infers(tiny_bundle):
    b = Bundle.open(tiny_bundle)
    for name in ("encoder", "tx", "rx"):
        r = create_runner("onnxruntime", name)
        r.load(r.locate(b, name, "fp32"), "fp32")
        declared = b.manifest["models"][name]["fp32"]
        assert [t.as_dict()["name"] for t in r.inputs] == [i["name"] for i in declared["inputs"]]
        assert [t.dtype for t in r.inputs] == [i["dtype"] for i in declared["inputs"]]
        assert r.providers[0] == "CPUExecutionProvider"
        r.close()
    r = create_runner("onnxruntime", "encoder").load(b.model_path("encoder", "int8"), "int8")
    x = np.zeros((2, *r.inputs[0].shape[1:]), np.float32)
    out = r.infer({"image": x})
    assert list(out) == ["features"] and out["features"].shape[0] == 2 and out["features"].dtype == np.float32
    with pytest.raises(BundleError, match="takes inputs"):  # ONNX Runtime's own refusal was a ValueError
        r.infer({"images": x})


@pytest.mark.skipif(_ort_has("CUDAExecutionProvider"), reason="CUDA EP present: the refusal is not reachable")
def test_missing_provider_is_refused_or_falls_back_with_one_warning(tiny_bundle):
    r = create_runner("onnxruntime-cuda", "encoder")
    assert "CUDAExecutionProvider" in r.available()
    with pytest.raises(BundleError, match="onnxruntime-cuda cannot run here: .*CUDAExecutionProvider"):
        Runtime(str(tiny_bundle), providers="cuda")
    with pytest.raises(BundleError, match="CUDAExecutionProvider"):
        r.load(Bundle.open(tiny_bundle).model_path("encoder", "fp32"), "fp32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rt = Runtime(str(tiny_bundle), providers="cuda", allow_fallback=True)
    assert len(caught) == 1 and "falling back" in str(caught[0].message)
    assert rt.backend == "onnxruntime" and rt.providers == ["CPUExecutionProvider"]
    assert Runtime(str(tiny_bundle), providers="auto").providers[0] in ("CPUExecutionProvider",)


def test_tensorrt_engines_skip_with_a_reason_or_are_missing_from_the_bundle(tiny_bundle):
    why = create_runner("tensorrt", "encoder").available()
    if why is not None:
        assert any(s in why for s in ("TensorRT", "pycuda", "GPU"))
        with pytest.raises(BundleError, match="tensorrt cannot run here"):
            Runtime(str(tiny_bundle), backend="tensorrt")
    else:  # a GPU machine with TensorRT: an un-built bundle names the command that builds its engines
        with pytest.raises(BundleError, match="rkd-edge export trt"):
            Runtime(str(tiny_bundle), backend="tensorrt")


def test_pytorch_sizes_count_what_each_graph_reads(tiny_run, tiny_bundle):
    """The tx graph holds the whole codec but reads only its transmitter half: its size is that half, so the
    PyTorch sizes add up like the exported graphs' (tx + rx = codec + classifier) and sit under each ONNX file
    (which adds the graph's nodes to the same weights: half its bytes in these tiny models)."""
    ref = Runtime(str(tiny_bundle), backend="pytorch", run=str(tiny_run))
    size = {name: r.size_bytes() for name, r in ref.runners.items()}
    size["transmitter"] = TorchRunner("transmitter").load(tiny_run, "fp32").size_bytes()  # ONNX Runtime fuses only
    system = ref.runners["tx"].module.codec, ref.runners["rx"].module.classifier
    whole = sum(p.numel() * p.element_size() for m in system for p in m.parameters())
    assert size["tx"] + size["rx"] == whole + sum(b.numel() * b.element_size() for m in system for b in m.buffers())
    assert size["transmitter"] == size["encoder"] + size["tx"]
    for name in size:
        onnx_bytes = (tiny_bundle / "models" / f"{name}.onnx").stat().st_size
        assert 0.5 * onnx_bytes < size[name] <= onnx_bytes, name


def test_pytorch_reference_matches_onnxruntime(tiny_run, tiny_bundle, digits):
    ort = Runtime(str(tiny_bundle))
    ref = Runtime(str(tiny_bundle), backend="pytorch", run=str(tiny_run))
    assert ref.providers == ["PyTorch cpu"] and ref.runners["tx"].size_bytes() > 0
    imgs = digits.test.images[:16]
    np.testing.assert_allclose(ref.encode(imgs), ort.encode(imgs), atol=1e-4)
    f = ort.encode(imgs)
    (s1, m1), (s2, m2) = ort.transmit(f, 3.0, 4), ref.transmit(f, 3.0, 4)
    np.testing.assert_allclose(s1, s2, atol=1e-4)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_allclose(ort.receive(s1, m1, 3.0), ref.receive(s1, m1, 3.0), atol=1e-4)
    with pytest.raises(BundleError, match="runs fp32, not int8"):
        Runtime(str(tiny_bundle), precision="int8", backend="pytorch", run=str(tiny_run))
    with pytest.raises(BundleError, match="pass --run RUN"):
        Runtime(str(tiny_bundle), backend="pytorch", run=str(tiny_run / "nonexistent"))


def test_the_pytorch_reference_runs_only_the_bundles_own_run(tiny_run, tiny_bundle, tmp_path, monkeypatch):
    """Without --run the source run is found from the bundle's folder (not the one the command runs in), a
    path from elsewhere in the manifest is not followed, and a run of another config is refused."""
    monkeypatch.chdir(tmp_path)  # the manifest's path is relative to the bundle's folder
    assert Runtime(str(tiny_bundle), backend="pytorch").providers == ["PyTorch cpu"]
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    m = json.loads((b / "manifest.json").read_text())
    write_manifest_as_rkd_edge(b, {**m, "source_run": {**m["source_run"], "path": "/etc"}})
    with pytest.raises(BundleError, match="pass --run RUN"):
        Runtime(str(b), backend="pytorch")
    # without the digests any run would do: a stranger's bundle ran a copy with halved weights as "ok" rows
    for key in ("config_sha256", "weights_sha256"):
        write_manifest_as_rkd_edge(b, {**m, "source_run": {**m["source_run"], key: None}})
        with pytest.raises(BundleError, match="records no digest"):
            Runtime(str(b), backend="pytorch", run=str(tiny_run))
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "seed": cfg["seed"] + 1}))
    with pytest.raises(BundleError, match="not the one the bundle was exported from"):
        Runtime(str(tiny_bundle), backend="pytorch", run=str(other))
    # the same config with other weights (as a pruned or retrained run has) is not the bundle's run either
    import torch

    same = tmp_path / "same-config"
    shutil.copytree(tiny_run, same)
    ck = same / "checkpoints" / "stage2.pt"
    state = torch.load(ck, weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name] + 1e-3
    torch.save(state, ck)
    restamp_checkpoint(same, "stage2")  # a retrained run's record holds its own checkpoint's digest
    with pytest.raises(BundleError, match="other config or weights"):
        Runtime(str(tiny_bundle), backend="pytorch", run=str(same))


def test_precision_per_model_and_device_selection(tiny_bundle, tmp_path):
    b = _copy(tiny_bundle, tmp_path, lambda m: m.update(default_precision={"encoder": "int8", "tx": "fp32"}))
    rt = Runtime(str(b))
    assert rt.precisions == {"encoder": "int8", "tx": "fp32", "rx": "fp32"} and rt.precision == "mixed"
    cpu_form = json.loads((b / "manifest.json").read_text())["models"]["encoder"]["int8"].get("onnxruntime_cpu")
    assert rt.runners["encoder"].path == b / (cpu_form["file"] if cpu_form else "models/encoder.int8.onnx")
    assert Runtime(str(b), precision="fp32").precision == "fp32"  # the argument wins

    here = fingerprint("onnxruntime")
    mine = {"encoder": "fp32", "tx": "int8", "rx": "int8"}
    other = {"encoder": "int8", "tx": "int8", "rx": "int8"}

    def select(m):
        m["selection"] = {here: mine, "0000000000000000": other}

    b2 = tmp_path / "sel"
    shutil.copytree(_copy(tiny_bundle, tmp_path / "x", select), b2)
    rt = Runtime(str(b2))
    assert rt.precisions == mine and rt.fingerprint == here
    assert Bundle.open(b2).bundle_id == Bundle.open(tiny_bundle).bundle_id  # selection is device-local
    b3 = _copy(tiny_bundle, tmp_path / "y", lambda m: m.update(selection={"0000000000000000": other}))
    assert Runtime(str(b3)).precisions == dict.fromkeys(("encoder", "tx", "rx"), "fp32")  # not measured here

    bad = _copy(tiny_bundle, tmp_path / "z", lambda m: m.update(default_precision={"decoder": "int8"}))
    with pytest.raises(BundleError, match="names a model other than encoder"):
        Runtime(str(bad))
    with pytest.raises(BundleError, match="runs fp32, int8, not fp16"):
        Runtime(str(tiny_bundle), precision="fp16")


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda m: m["models"]["rx"]["fp32"]["inputs"][0]["shape"].__setitem__(1, 99), "rx input 'symbols'"),
        (lambda m: m["models"]["encoder"]["fp32"]["inputs"][0].update(dtype="float16"), "encoder input 'image'"),
        (lambda m: m["models"]["tx"]["fp32"]["outputs"][1].update(name="maske"), "tx .* outputs"),
        (lambda m: m["symbols"].update(max=m["symbols"]["max"] + 1), "symbols"),
    ],
)
def test_declared_io_mismatch_is_refused(tiny_bundle, tmp_path, edit, message):
    b = _copy(tiny_bundle, tmp_path, edit)
    with pytest.raises(BundleError, match=message):
        Runtime(str(b))


def test_inputs_are_validated(tiny_bundle, digits):
    rt = Runtime(str(tiny_bundle))
    imgs = digits.test.images[:3]
    f = rt.encode(imgs)
    sym, mask = rt.transmit(f, 10.0, 4)
    K = rt.max_symbols
    bad = {
        "NaN SNR": lambda: rt.transmit(f, float("nan"), 4),
        "SNR 1e9 dB": lambda: rt.transmit(f, 1e9, 4),  # the CLI refuses beyond +-100 dB; so does the API
        "SNR -101 dB at the receiver": lambda: rt.receive(sym, mask, np.array([10.0, -101.0, 0.0])),
        "SNR 1e39 dB (inf in float32)": lambda: rt.send(imgs, 1e39, 4),
        "k = 0": lambda: rt.transmit(f, 10.0, 0),
        "k > K": lambda: rt.transmit(f, 10.0, K + 1),
        "fractional k": lambda: rt.transmit(f, 10.0, 2.5),
        "wrong SNR count": lambda: rt.transmit(f, np.zeros(5), 4),
        "wrong feature width": lambda: rt.transmit(f[:, :-1], 10.0, 4),
        "infinite features": lambda: rt.transmit(np.full_like(f, np.inf), 10.0, 4),
        "wrong image size": lambda: rt.encode(np.zeros((2, rt.size + 1, rt.size, 1), np.uint8)),
        "image values": lambda: rt.encode(np.full((2, rt.size, rt.size, 1), 300.0)),
        "empty batch": lambda: rt.encode(np.zeros((0, rt.size, rt.size, 1), np.uint8)),
        "string images": lambda: rt.encode(np.array([["a"]])),
        "symbols of another K": lambda: rt.receive(sym[:, :-1], mask[:, :-1], 10.0),
        "mask not 0/1": lambda: rt.receive(sym, mask * 0.5, 10.0),
        "NaN symbols": lambda: rt.receive(np.full_like(sym, np.nan), mask, 10.0),
        "unknown channel": lambda: rt.receive(sym, mask, 10.0, "satellite"),
    }
    for what, call in bad.items():
        with pytest.raises(BundleError):
            call()
            pytest.fail(f"{what} was accepted")
    assert rt.receive(sym, mask, np.full(3, 10.0, np.float32)).shape == (3, len(rt.classes))
    assert rt.transmit(f, 10.0, np.array([1, 4, K]))[1].sum(-1).tolist() == [1.0, 4.0, float(K)]
