"""INT8 that pays: calibration fixes, BN folding, the per-model speed/accuracy report of ``export --int8``."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from rkd_edge.errors import UserError
from rkd_edge.export.calibration import MIN_SAMPLES, check_count
from rkd_edge.export.int8 import measure_ratios, session, single_conv
from rkd_edge.export.quantize import CPU_RECIPE, CPU_RECIPES, fold_bn_through_concat, qdq_summary, quantize_model
from tests.conftest import run_cli


def _ragged_feeds(c: int, n: int, size: int = 6) -> list[dict[str, np.ndarray]]:
    """``n`` samples in passes of 32 and a shorter last one (what build_feeds makes for n % 32 != 0)."""
    x = np.random.default_rng(0).standard_normal((n, c, size, size)).astype(np.float32)
    return [{"x": x[i : i + 32]} for i in range(0, n, 32)]


@pytest.mark.parametrize("method", ["entropy", "percentile", "minmax"])
def test_histogram_calibration_with_a_short_last_pass(tmp_path, method):
    """200 samples = 6 x 32 + 8: ONNX Runtime's histogram collector used to fail ("inhomogeneous shape")."""
    src = tmp_path / "conv.onnx"
    single_conv(src, 8, 3, False, 6)
    dst = tmp_path / "conv.int8.onnx"
    rec = quantize_model(src, dst, _ragged_feeds(8, 200), "encoder", method)
    s = qdq_summary(dst)
    assert rec["method"] == method and s["QuantizeLinear"] > 0 and s["DequantizeLinear"] > 0
    x = np.random.default_rng(1).standard_normal((3, 8, 6, 6)).astype(np.float32)
    # Through the toolkit's CPU session (what evaluate and the export's selection use): on an x86 CPU without
    # VNNI, ONNX Runtime's fused kernel overflows (0.92 off here, against 0.07 for the Q/DQ graph as written).
    ref = session(src).run(None, {"x": x})[0]
    got = session(dst).run(None, {"x": x})[0]
    assert np.abs(ref - got).max() < 0.1 * np.abs(ref).max()  # calibrated, not garbage


def test_cpu_recipe_writes_integer_kernels(tmp_path):
    src = tmp_path / "conv.onnx"
    single_conv(src, 16, 1, False, 6)
    rec = quantize_model(src, tmp_path / "cpu.onnx", _ragged_feeds(16, 128), "encoder", "minmax", CPU_RECIPE)
    assert rec["activations"] == "uint8 asymmetric"
    ops = qdq_summary(tmp_path / "cpu.onnx")
    if CPU_RECIPE.format == "qoperator":
        assert "QLinearConv" in ops["qoperator_ops"]
    else:
        assert ops["QuantizeLinear"] > 0


def test_calibration_floor():
    check_count(MIN_SAMPLES)
    with pytest.raises(UserError, match="--calib-min 100"):
        check_count(100)
    check_count(100, minimum=64)  # lowered explicitly
    with pytest.raises(UserError, match="only 90 images"):
        check_count(None, available=90)  # the default takes the whole split, under the floor
    with pytest.raises(UserError, match="is more than the 90 images of the training split"):
        check_count(128, available=90)  # taken quietly as 90 before
    check_count(None, available=200)  # the default: 200 of them
    with pytest.raises(UserError):
        check_count(10, minimum=0)


def test_bn_behind_concat_is_folded():
    """Conv, Conv -> Concat -> BatchNormalization (a DARTS factorized reduce) folds into the Convs."""
    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal((3, 4, 1, 1)).astype(np.float32) for _ in range(2))
    gamma, beta = rng.uniform(0.5, 2, 6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    mean, var = rng.standard_normal(6).astype(np.float32), rng.uniform(0.5, 2, 6).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (w2, "w2"), (gamma, "g"), (beta, "b")]]
    inits += [numpy_helper.from_array(mean, "m"), numpy_helper.from_array(var, "v")]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="c1"),
        helper.make_node("Conv", ["x", "w2"], ["c2"], name="c2"),
        helper.make_node("Concat", ["c1", "c2"], ["cat"], axis=1, name="cat"),
        helper.make_node("BatchNormalization", ["cat", "g", "b", "m", "v"], ["y"], epsilon=1e-5, name="bn"),
    ]
    graph = helper.make_graph(
        nodes,
        "fr",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6, 5, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert fold_bn_through_concat(model) == 1
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}
    onnx.checker.check_model(model)
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_export_int8_reports_ratio_accuracy_and_default_per_model(tiny_bundle):
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    report, default = m["int8_report"], m["default_precision"]
    assert set(report) == set(default) == {"encoder", "tx", "rx"}
    for name, r in report.items():
        assert r["ratio_b1"] > 0 and r["ratio_b32"] > 0 and r["form"] in ("int8", "int8-cpu")
        assert default[name] in ("fp32", "int8") and default[name] == r["default"]
        if default[name] == "int8":  # measured faster at both batches, and within 0.5 point
            assert r["winner"] != "fp32" and max(r["ratio_b1"], r["ratio_b32"]) < 1.0
            assert r["accuracy_change_pts"] >= -0.5
        assert len(r["accuracy_points"]) == 6  # AWGN and Rayleigh at 0, 10, 20 dB
        of = r["accuracy_of"]  # what the points are of, with each FP32 point's interval around it
        assert of["trials"] == 1 and of["images"] >= 1 and of["ci95"].keys() == r["accuracy_points"].keys()
        for p, (lo, hi) in of["ci95"].items():
            assert lo <= r["accuracy_points"][p][0] <= hi
        cpu_file = tiny_bundle / "models" / f"{name}.int8-cpu.onnx"
        shipped = "onnxruntime_cpu" in m["models"][name]["int8"]
        assert cpu_file.is_file() == shipped == (r["form"] == "int8-cpu")
        if shipped:
            assert f"models/{name}.int8-cpu.onnx" in m["files"]
    cal = m["calibration"]
    assert cal["encoder"]["structure"]["BatchNormalization"] == 0
    # Convs whose weights come through a DequantizeLinear are quantized (every Conv was counted as float)
    import onnx

    graph = onnx.load(str(tiny_bundle / "models" / "encoder.int8.onnx")).graph
    dq_out = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert cal["encoder"]["structure"]["qdq_convs"] == sum(n.input[1] in dq_out for n in convs) > 0
    assert cal["encoder"]["structure"]["float_convs"] == len(convs) - cal["encoder"]["structure"]["qdq_convs"]


def test_measure_ratios_on_a_bundle(tiny_bundle):
    r = measure_ratios(tiny_bundle, ("int8",), threads=1, seconds=0.4, models=("tx",))
    assert set(r) == {"tx"}
    rec = r["tx"]
    assert set(rec["p50_ms"]) == {"fp32", "int8"} and set(rec["p50_ms"]["fp32"]) == {"1", "32"}
    assert rec["winner"] in ("fp32", "int8") and np.isfinite([rec["ratio_b1"], rec["ratio_b32"]]).all()


def test_cli_refuses_too_few_calibration_samples(tiny_run, tmp_path):
    proc = run_cli("export", str(tiny_run), "--out", str(tmp_path / "b"), "--int8", "--calib-samples", "100")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--calib-min" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists()
    proc = run_cli("export", str(tiny_run), "--out", str(tmp_path / "b"), "--int8", "--calibration", "kl")
    assert proc.returncode == 2 and "minmax" in proc.stderr


def test_codec_cpu_form_stays_linear_only(tiny_bundle, tmp_path):
    """The codec's CPU form quantizes weight MatMuls only: LayerNorm, Softmax, residual Add stay float."""
    rng = np.random.default_rng(0)
    sess = ort.InferenceSession(str(tiny_bundle / "models" / "tx.onnx"))
    k = sess.get_outputs()[0].shape[1]
    d = sess.get_inputs()[0].shape[1]
    feeds = [
        {
            "features": rng.standard_normal((32, d)).astype(np.float32),
            "snr_db": rng.uniform(-10, 20, 32).astype(np.float32),
            "k": np.full(32, k, np.int64),
            "channel": rng.integers(0, 2, 32),
        }
        for _ in range(4)
    ]
    dst = tmp_path / "tx.cpu.onnx"
    quantize_model(tiny_bundle / "models" / "tx.onnx", dst, feeds, "linear-only", "minmax", CPU_RECIPES["linear-only"])
    nodes = list(onnx.load(str(dst)).graph.node)
    ops = {n.op_type for n in nodes}
    assert ops & {"QLinearMatMul", "MatMulInteger", "QGemm"}
    assert not ops & {"QLinearAdd", "QLinearSoftmax", "QLinearLayerNorm"}
    producers = {o: n.op_type for n in nodes for o in n.output}
    for n in nodes:
        if n.op_type in ("LayerNormalization", "Softmax"):
            assert producers.get(n.input[0]) not in ("DequantizeLinear", "QLinearMatMul"), n.name


def test_a_cpu_form_that_loses_accuracy_is_not_kept(tiny_bundle, tmp_path, digits):
    """However fast, an ONNX Runtime CPU form that changes the answers is dropped before timing (a quantized
    Relu in QOperator UINT8 once turned the quickstart encoder's features to noise: 0.98 -> 0.52)."""
    import shutil

    import onnx
    from onnx import numpy_helper

    from rkd_edge.export.int8 import select_precisions
    from rkd_edge.runtime import Runtime

    work = tmp_path / "b"
    shutil.copytree(tiny_bundle, work)
    model = onnx.load(str(work / "models" / "encoder.onnx"))
    for init in model.graph.initializer:  # a broken "INT8" encoder: every weight's sign flipped
        init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))
    onnx.save(model, str(work / "models" / "encoder.int8-cpu.onnx"))
    rt = Runtime(str(tiny_bundle))
    x = rt.preprocess(digits.test.images[:200])
    report, default = select_precisions(
        work, x, digits.test.labels[:200], rt.max_symbols, {"mode": "block", "csi": "zf"}, seconds=0.4
    )
    assert not (work / "models" / "encoder.int8-cpu.onnx").exists()
    assert report["encoder"]["form"] == "int8" and report["encoder"]["accuracy_change_pts"] > -5


def test_a_full_range_cpu_form_is_not_run_where_int8_saturates(monkeypatch):
    """On an x86 CPU without VNNI the CPU form runs only if it was made with 7-bit weights; otherwise the
    Q/DQ model of record runs, unfused. The probe agrees with the CPU flags this machine reports."""
    import platform
    from pathlib import Path

    from rkd_edge.runtime.runners import device
    from rkd_edge.runtime.runners import ort as ort_runner

    flags = next((ln.split(":", 1)[1].split() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("flags")), [])  # fmt: skip
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    assert device.int8_saturates() == (x86 and bool(flags) and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))

    class FakeBundle:  # the manifest fields locate() reads
        root = Path("/b")
        manifest = {"models": {"encoder": {"int8": {"onnxruntime_cpu": {"file": "models/encoder.int8-cpu.onnx"}}}}}

        def model_path(self, model, precision):
            return self.root / "models" / f"{model}.{precision}.onnx"

    runner = ort_runner.OnnxRuntimeRunner("encoder")
    for saturates, reduce_range, want in ((False, False, "int8-cpu"), (True, False, "int8"), (True, True, "int8-cpu")):
        monkeypatch.setattr(ort_runner, "int8_saturates", lambda s=saturates: s)
        FakeBundle.manifest["models"]["encoder"]["int8"]["onnxruntime_cpu"]["reduce_range"] = reduce_range
        assert runner.locate(FakeBundle(), "encoder", "int8").name == f"encoder.{want}.onnx"
        opts = ort_runner.session_options(Path("/b/models/encoder.int8.onnx"))
        basic = opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        assert basic == saturates
