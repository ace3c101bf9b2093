"""Export: ONNX parity, Q/DQ structure, hash-checked bundles, torch-free runtime, TensorRT skip."""

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from rkd_edge.codec.blocks import length_mask
from rkd_edge.export.graphs import graph_io
from rkd_edge.export.onnx_export import DEFAULT_OPSET, export_onnx, parity
from rkd_edge.runtime import BundleError, Runtime
from rkd_edge.runtime.runners.ort import cpu_session
from tests.conftest import run_cli
from tests.test_system import make_system


def test_manifest_and_fp32_parity(tiny_bundle):
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    assert set(m["parity"]) == {"encoder", "tx", "rx", "transmitter"}
    for rec in m["parity"].values():
        assert rec["max_abs_error"] <= 1e-4 and rec["cosine"] > 0.9999
    assert m["opset"] == DEFAULT_OPSET == 17
    # --int8 bundle: the default is per model, what export measured to win (tests/test_int8.py checks how)
    assert set(m["default_precision"]) == {"encoder", "tx", "rx"}
    assert Runtime(str(tiny_bundle)).precisions == m["default_precision"]
    for key in (
        "format",
        "source_run",
        "files",
        "models",
        "normalisation",
        "classes",
        "snr_db",
        "symbols",
        "precisions",
        "calibration",
        "versions",
    ):
        assert key in m
    assert m["source_run"]["config_sha256"] and not m["source_run"]["path"].startswith("/")
    tx = m["models"]["tx"]["fp32"]
    assert [i["name"] for i in tx["inputs"]] == ["features", "snr_db", "k", "channel"]
    assert tx["outputs"][0]["shape"][1:] == [m["symbols"]["max"], 2] and tx["outputs"][0]["shape"][0] == "batch"
    fused = m["models"]["transmitter"]
    assert set(fused) == {"fp32"}  # INT8 forms are made of the three stage models only
    assert [i["name"] for i in fused["fp32"]["inputs"]] == ["image", "snr_db", "k", "channel"]
    assert fused["fp32"]["outputs"] == tx["outputs"]


def test_exported_graphs_have_no_complex_or_channel(tiny_bundle):
    for name in ("encoder", "tx", "rx", "transmitter"):
        model = onnx.load(str(tiny_bundle / "models" / f"{name}.onnx"))
        ops = {n.op_type for n in model.graph.node}
        assert not ops & {"RandomNormal", "RandomNormalLike", "RandomUniform", "NonZero"}
        assert model.opset_import[0].version == 17
        for v in list(model.graph.input) + list(model.graph.output):
            assert v.type.tensor_type.elem_type not in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128)
    assert "LayerNormalization" in {n.op_type for n in onnx.load(str(tiny_bundle / "models/tx.onnx")).graph.node}


def test_int8_is_qdq_and_keeps_norms_in_float(tiny_bundle):
    for name in ("encoder", "tx", "rx"):
        model = onnx.load(str(tiny_bundle / "models" / f"{name}.int8.onnx"))
        nodes = list(model.graph.node)
        ops = [n.op_type for n in nodes]
        assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
        assert not [o for o in ops if o.startswith("QLinear") or o.endswith("Integer")]
        if name != "encoder":  # linear-only codec: LayerNorm / Softmax read float, not DQ outputs
            producers = {o: n.op_type for n in nodes for o in n.output}
            quantized_inputs = {i for m in nodes if m.op_type == "QuantizeLinear" for i in m.input}
            for n in nodes:
                if n.op_type in ("LayerNormalization", "Softmax"):
                    assert producers.get(n.input[0]) != "DequantizeLinear", n.name  # computes in float
                if n.op_type == "Softmax":  # attention scores x values stays a float MatMul
                    assert n.output[0] not in quantized_inputs, n.name
    cal = json.loads((tiny_bundle / "manifest.json").read_text())["calibration"]
    assert all(c["count"] >= 128 and len(c["sha256"]) == 64 for c in cal.values())


@pytest.mark.parametrize("damage", ["tamper", "truncate", "delete"])
def test_damaged_bundle_refused(tiny_bundle, tmp_path, damage):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    target = b / "models" / "encoder.onnx"
    data = target.read_bytes()
    if damage == "tamper":
        target.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    else:
        target.unlink()
    with pytest.raises(BundleError):
        Runtime(str(b))
    proc = run_cli("evaluate", str(b), "--trials", "1", "--snr", "0,1")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "encoder.onnx" in lines[0] and "Traceback" not in proc.stderr


def test_runtime_imports_no_torch_and_runs(tiny_bundle, digits):
    code = (
        f"import sys, numpy as np; from rkd_edge.runtime import Runtime; rt = Runtime({str(tiny_bundle)!r}); "
        "imgs = np.zeros((3, 8, 8, 1), np.uint8); f = rt.encode(imgs); s, m = rt.transmit(f, 10.0, 4); "
        "lg = rt.receive(s, m, 10.0); assert lg.shape == (3, 10); "
        "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-c", "import rkd_edge.runtime, sys; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
    )
    assert proc.stdout.strip() == "False"


def test_runtime_matches_torch_system(tiny_run, tiny_bundle, digits):
    import torch

    from rkd_edge.rundir import load_run

    _, system, _ = load_run(tiny_run)
    rt = Runtime(str(tiny_bundle))
    imgs = digits.test.images[:16]
    feats = rt.encode(imgs)
    with torch.no_grad():
        ref = system.encoder(digits.test.transform(imgs)).numpy()
    np.testing.assert_allclose(feats, ref, atol=1e-4)
    sym, mask = rt.transmit(feats, 5.0, 4)
    assert mask.sum(-1).tolist() == [4.0] * 16
    np.testing.assert_allclose((sym**2).sum(-1).sum(-1) / mask.sum(-1), 1.0, rtol=1e-4)


def test_fused_transmitter_sends_what_encoder_and_tx_send(tiny_bundle, digits):
    """send() runs the one fused graph where it can, else the two models; both give the same symbols."""
    imgs = digits.test.images[:16]
    snr, k = np.linspace(-10, 20, 16).astype(np.float32), np.array([2, 4] * 8)
    with Runtime(str(tiny_bundle), precision="fp32") as rt:
        assert rt.fused is not None
        sym, mask = rt.send(imgs, snr, k, "rayleigh")
        ref, ref_mask = rt.transmit(rt.encode(imgs), snr, k, "rayleigh")
        np.testing.assert_allclose(sym, ref, atol=1e-5)
        assert (mask == ref_mask).all() and mask.sum(-1).tolist() == k.astype(float).tolist()
        with pytest.raises(BundleError, match="k must be whole numbers"):
            rt.send(imgs, snr, 99)
    with Runtime(str(tiny_bundle), precision="fp32", fused=False) as rt:
        assert rt.fused is None
        np.testing.assert_allclose(rt.send(imgs, snr, k, "rayleigh")[0], sym, atol=1e-5)
    with Runtime(str(tiny_bundle), precision={"encoder": "int8"}) as rt:  # INT8 encoder: the two models
        assert rt.fused is None and rt.send(imgs, 5.0, 4)[0].shape == sym.shape


def test_bundle_without_the_fused_graph_still_runs(tiny_bundle, tmp_path):
    """A bundle exported before the fused graph existed (no ``transmitter``) loads and sends as before."""
    from rkd_edge.outputs import write_manifest

    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    m = json.loads((old / "manifest.json").read_text())
    (old / m["models"].pop("transmitter")["fp32"]["file"]).unlink()
    m["parity"].pop("transmitter")
    write_manifest(old, m)
    with Runtime(str(old), precision="fp32") as rt:
        assert rt.fused is None
        sym, mask = rt.send(np.zeros((2, 8, 8, 1), np.uint8), 10.0, 4)
        assert sym.shape[0] == 2 and mask.sum() == 8


def test_bundle_evaluation_fp32_and_int8_side_by_side(tiny_bundle, tmp_path):
    proc = run_cli("evaluate", str(tiny_bundle), "--snr", "0,10", "--trials", "1", "--out", str(tmp_path), check=True)
    summary = json.loads(proc.stdout)  # progress bars on stderr: `evaluate ... > out.json` parses
    assert "noiseless" in summary and set(summary["models"]) == {"onnx-fp32", "onnx-int8"}
    assert all((tiny_bundle / f).is_file() for files in summary["models"].values() for f in files.values())
    rows = json.loads((tmp_path / "evaluation.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"onnx-fp32", "onnx-int8"}
    assert (tmp_path / "accuracy_vs_snr.png").stat().st_size > 1000


def test_bundle_evaluation_matches_pytorch_point_by_point(tiny_run, tiny_bundle, tmp_path):
    """Both back ends share one loop and one noise source, so FP32 ONNX equals PyTorch at every point
    (up to a test sample whose decision sits on a float-rounding edge). Both name as the noiseless bound the
    noiseless grid's row, not the first identity row of the user's grid."""
    args = ["--snr", "-4,0,8", "--channel", "awgn,rayleigh,identity", "--trials", "1"]
    run_cli("-q", "evaluate", str(tiny_run), *args, "--out", str(tmp_path / "pt"), check=True)
    run_cli("-q", "evaluate", str(tiny_bundle), *args, "--out", str(tmp_path / "ort"), check=True)

    def points(d, method=None):
        rows = json.loads((tmp_path / d / "evaluation.json").read_text())["rows"]
        return {(r["channel"], r["snr_db"], r["k"]): r for r in rows if method in (None, r["method"])}

    pt, ort = points("pt"), points("ort", "onnx-fp32")
    assert pt.keys() == ort.keys() and len(pt) >= 7
    for key, r in pt.items():
        assert abs(r["accuracy"] - ort[key]["accuracy"]) <= 2 / r["n"], key
    (bound,) = [r for (c, snr, _), r in pt.items() if c == "identity" and snr not in (-4, 0, 8)]
    summary = {d: json.loads((tmp_path / d / "evaluation_summary.json").read_text()) for d in ("pt", "ort")}
    assert summary["pt"]["noiseless"] == bound["accuracy"]
    assert abs(summary["ort"]["noiseless"]["onnx-fp32"] - bound["accuracy"]) <= 2 / bound["n"]
    # Each says what it was computed from (a hostile pass found bare numbers): the thing, config, grid, versions.
    cfg = json.loads((tiny_run / "config.json").read_text())
    for d, of in (("pt", "run weights "), ("ort", "bundle ")):
        s = summary[d]
        assert s["of"].startswith(of) and s["grid"]["snr_db"] == [-4.0, 0.0, 8.0] and s["grid"]["trials"] == 1
        assert s["grid"]["seed"] == cfg["seed"] and "onnxruntime" in s["versions"] and len(s["config_sha256"]) == 64


def test_tensorrt_absent_skips_cleanly(tiny_bundle):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        proc = run_cli("export", "trt", str(tiny_bundle), "--fp16")
        assert proc.returncode == 2 and "TensorRT is not installed" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    else:
        pytest.skip("TensorRT is installed here: engine builds are exercised on the target device")


def test_jetsons_without_fast_int8_refuse_it():
    from rkd_edge.export.tensorrt import int8_supported

    assert not int8_supported("NVIDIA Jetson Nano Developer Kit")[0]
    assert int8_supported("NVIDIA Jetson Orin Nano Developer Kit")[0]
    assert int8_supported("NVIDIA Jetson AGX Xavier")[0]
    assert not int8_supported("NVIDIA Jetson TX2 Developer Kit")[0]  # Pascal: its profile has no fast INT8
    assert int8_supported(None)[0] and int8_supported("a workstation")[0]


def test_existing_bundle_not_overwritten(tiny_run, tiny_bundle):
    proc = run_cli("export", str(tiny_run), "--out", str(tiny_bundle))
    assert proc.returncode == 2 and "already exists" in proc.stderr


@pytest.mark.parametrize("part", ["tx-task-head", "rx-per-length"])
def test_codec_options_export_with_parity(part, tmp_path):
    """The CAT codec's options export to ONNX and ONNX Runtime computes what PyTorch does, at every length:
    the transmitter's task head (``codec.posterior``: a softmax inside the tx graph) and the receiver's map
    per length (``codec.rx_per_length``: a gather by the length each sample's mask holds)."""
    system = make_system(gains=True, posterior=part == "tx-task-head", rx_per_length=part == "rx-per-length").eval()
    codec = system.codec
    torch.nn.init.normal_(codec.tx_gain.weight, std=0.3)  # trained gains are not 1
    if part == "rx-per-length":  # trained maps differ
        torch.nn.init.normal_(codec.rx_lin_w, std=0.3)
    g = graph_io(system, (1, 8, 8))[part[:2]]
    path = tmp_path / "graph.onnx"
    export_onnx(g["module"], g["inputs"], g["input_names"], g["output_names"], path)
    snr, k, ch = torch.linspace(-10, 20, 6), torch.tensor([2, 4, 8, 8, 3, 1]), torch.zeros(6, dtype=torch.long)
    if part == "tx-task-head":
        feeds = [(torch.randn(6, 16) * 2, snr, k, ch)]
    else:
        feeds = [(torch.randn(6, 8, 2), length_mask(k, 8), snr, ch)]
    p = parity(g["module"], cpu_session(path), feeds, g["input_names"])
    assert p["max_abs_error"] < 1e-4 and p["cosine"] > 0.9999, p


def test_export_of_a_bundle_says_it_takes_a_run(tiny_bundle, tmp_path):
    """It advised `rkd-edge pipeline --out BUNDLE`, which is refused: the folder is a bundle."""
    proc = run_cli("-q", "export", str(tiny_bundle), "--out", str(tmp_path / "b"))
    assert proc.returncode == 2 and "is an rkd-edge bundle, not a run" in proc.stderr
    assert "pipeline --out" not in proc.stderr


def test_a_command_with_stderr_closed_still_does_its_work(tiny_bundle, tmp_path):
    """Progress is cosmetic: with stderr closed (2>&-) the progress bar's write failed and evaluate exited 2
    having written nothing."""
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "from rkd_edge.cli import main; main()", "evaluate", str(tiny_bundle), "--snr", "0",
         "--trials", "1", "--channel", "awgn", "--out", str(tmp_path / "ev")],
        stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2), text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and "noiseless" in json.loads(proc.stdout)
    assert (tmp_path / "ev" / "evaluation.json").is_file()
