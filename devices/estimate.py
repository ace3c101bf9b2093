"""Latency and memory *estimates* of a bundle's ONNX graphs on a device profile (roofline per node).

Method (documented here and in every result as ``method``):

1. The FP32 ONNX graph of each model (encoder, tx, rx) is shape-inferred at the requested batch (values
   that static inference leaves open are measured by one ONNX Runtime call on zeros).
2. Per node: FLOPs (Conv, ConvTranspose: ``2 x out elements x in-channels/group x kernel``; MatMul, Gemm:
   ``2 x out elements x K``; element-wise ops 1 per output element, transcendental ones 4, LayerNorm and
   Softmax 8, reductions and pooling per input element) and bytes moved (every input and output tensor,
   weights included, at the precision's element size).
3. Per node time ``max(FLOPs / rate, bytes / bandwidth) + launch overhead``. Matrix ops (Conv, MatMul,
   Gemm) run at the profile's dense FP32 / FP16 / INT8 rate; the others at the FP32 rate. Pure views
   (Reshape, Squeeze, Shape, Constant, ...) cost nothing. An activation or bias add whose only input is
   a matrix op's single-use output is fused into it (no launch, no extra bytes), as TensorRT and ONNX
   Runtime fuse them. INT8: matrix ops read and write 1-byte tensors; the other nodes stay in FP16 on a
   GPU and FP32 on a CPU. On the host the INT8 estimate reads the bundle's Q/DQ graph (ONNX Runtime runs
   its Quantize/Dequantize nodes); on a Jetson the FP32 graph (TensorRT folds them into its kernels).
4. Latency = sum over nodes (batch-1 inference is serial). Memory = weights at the precision + the peak
   of live activations over the topological order; the runtime's own workspace and code are not in it.

It is an estimate: it ignores caches, kernel efficiency below peak and TensorRT's tactic choices. The
``host`` profile is measured on this machine with the one timing protocol
(:mod:`rkd_edge.devices.latency`) so the estimate can be checked against a measured bench there
(``benchmarks/devices_estimate.py``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rkd_edge.devices.detect import host_cpu
from rkd_edge.devices.latency import measure
from rkd_edge.devices.profiles import DeviceProfile, get_profile
from rkd_edge.errors import UserError
from rkd_edge.runtime.bundle import DEFAULT_OPSET, PRECISIONS, Bundle, dims_agree
from rkd_edge.runtime.onnx_wire import WireError, external_tensors
from rkd_edge.runtime.runners.ort import cpu_session, is_ort_error, ort_reason

METHOD = (
    "roofline per ONNX node: max(FLOPs / peak rate, bytes / bandwidth) + launch overhead, summed; "
    "activations fused into their matrix op; memory = weights + peak live activations (devices/estimate.py)"
)
MIB = 2**20  # every "mb" of rkd-edge (bench sizes, peak RSS, tegrastats' RAM) is 2^20 bytes
# Operators whose output shape depends on the input's values (or runs a subgraph): no shape estimate holds.
VALUE_SHAPED = {"NonZero", "Unique", "Compress", "NonMaxSuppression", "TopK", "Loop", "If", "Scan", "Range"}
MATRIX_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
VIEW_OPS = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Shape", "Constant", "Size", "Dropout"}
FUSABLE = {"Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Add", "Mul", "Erf", "Gelu"}
TRANSCENDENTAL = {"Exp", "Log", "Erf", "Tanh", "Sigmoid", "Pow", "Sqrt", "Reciprocal", "Gelu", "Sin", "Cos"}
HEAVY = {"LayerNormalization", "Softmax", "LogSoftmax", "BatchNormalization", "InstanceNormalization"}
REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "GlobalAveragePool", "GlobalMaxPool"}
POOL = {"AveragePool", "MaxPool"}


@dataclass
class NodeCost:
    name: str
    op: str
    flops: float
    bytes: float
    matrix: bool
    fused: bool = False
    view: bool = False


def _numel(shape: list[int]) -> int:
    return int(np.prod(shape)) if shape else 1


def _shapes(model) -> dict[str, tuple[list[int], int]]:
    """Tensor name -> (shape, ONNX elem type) for every value the inference resolved to integers."""
    out = {}
    g = model.graph
    for v in list(g.input) + list(g.value_info) + list(g.output):
        t = v.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if all(d is not None for d in dims):
            out[v.name] = (dims, t.elem_type)
    for init in g.initializer:
        out[init.name] = (list(init.dims), init.data_type)
    return out


def read_model(path: str | Path, declared: dict | None = None):
    """An ONNX model from a bundle; not ONNX, or inputs/outputs other than ``declared`` (the manifest's
    ``{"inputs": [{"name": ...}], "outputs": [...]}``), is one line: the file is not the model it claims."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        data = Path(path).read_bytes()
        outside = external_tensors(data)
        model = onnx.load_model_from_string(data)  # from bytes: no external data file is read
    except (DecodeError, WireError, ValueError, OSError, onnx.checker.ValidationError) as exc:
        raise UserError(f"{path} is not a readable ONNX model ({type(exc).__name__}); re-export the bundle") from None
    if outside:
        raise UserError(f"{path} keeps tensors in another file (external data), which no bundle does; re-export it")
    # ONNX's operators and ONNX Runtime's own (the CPU INT8 graphs' fused ones); any other domain has no cost
    # here and no kernel in ONNX Runtime (evaluate and bench refuse it)
    if custom := next((n for n in model.graph.node if n.domain not in ("", "ai.onnx", "com.microsoft")), None):
        raise UserError(
            f"{path} uses operator {custom.domain}:{custom.op_type}, which no exported bundle holds; re-export it"
        )
    for kind, graph_side in (("inputs", model.graph.input), ("outputs", model.graph.output)):
        declared_side = [t for t in (declared or {}).get(kind) or [] if isinstance(t, dict)]
        want = [t.get("name") for t in declared_side]
        inits = {i.name for i in model.graph.initializer}
        got = {v.name: v for v in graph_side if v.name not in inits}
        if want and sorted(got) != sorted(want):
            raise UserError(
                f"{path} has {kind} {sorted(got)}, the manifest declares {sorted(want)}; re-export the bundle"
            )
        for t in declared_side:  # an image of 300000 x 300000 pixels declared in the graph: estimated, the memory
            dims = [
                d.dim_value if d.HasField("dim_value") else d.dim_param
                for d in got[t["name"]].type.tensor_type.shape.dim
            ]
            if not dims_agree(t.get("shape") or [], dims):
                raise UserError(
                    f"{path}: {kind[:-1]} {t['name']!r} is {dims}, the manifest declares {t.get('shape')}; "
                    "re-export the bundle"
                )
    return model


def load_with_batch(path: str | Path, batch: int):
    """The ONNX model with every symbolic input dimension set to ``batch`` and shapes inferred."""
    import onnx

    model = read_model(path)
    if odd := next((n for n in model.graph.node if n.op_type in VALUE_SHAPED), None):
        raise UserError(
            f"{path} has a {odd.op_type} node, whose output shape depends on the input's values: its cost cannot "
            "be estimated from shapes (no exported bundle holds one); re-export the bundle"
        )
    symbolic = onnx.ModelProto()
    symbolic.CopyFrom(model)
    inits = {i.name for i in model.graph.initializer}
    for v in list(model.graph.input) + list(model.graph.output):
        if v.name in inits:
            continue
        for d in v.type.tensor_type.shape.dim:
            if d.dim_param or not d.HasField("dim_value"):
                d.dim_value = batch
    del model.graph.value_info[:]
    return _complete_shapes(onnx.shape_inference.infer_shapes(model, data_prop=True), symbolic, batch, path)


def _complete_shapes(model, symbolic, batch: int, path) -> object:
    """Shapes that static inference left open (an ``Expand`` to a shape computed from the input's, as torch
    exports ``x.expand(B, -1, -1)``), measured by ONNX Runtime on zeros at batch 1 and 2 and extended to
    ``batch`` (each dimension linear in the batch): the probe's memory does not grow with the batch asked for.

    Without them the nodes after the open value counted 0 FLOPs and 0 bytes: the rx graph's whole
    transformer, 1/800 of its cost at batch 1. Operators whose output shapes depend on values are refused
    before (:data:`VALUE_SHAPED`), so zeros give the shapes any input gives.
    """
    import onnx

    known = _shapes(model)
    missing = [o for n in model.graph.node for o in n.output if o and o not in known]
    if not missing:
        return model
    symbolic.graph.output.extend(onnx.ValueInfoProto(name=name) for name in missing)
    inits = {i.name for i in symbolic.graph.initializer}
    inputs = [v for v in symbolic.graph.input if v.name not in inits]
    session = cpu_session(symbolic.SerializeToString(), threads=1)
    measured = []
    for b in (1, 2):
        feeds = {
            v.name: np.zeros(
                [d.dim_value if d.HasField("dim_value") else b for d in v.type.tensor_type.shape.dim],
                onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type),
            )
            for v in inputs
        }
        try:
            measured.append(session.run(missing, feeds))
        except Exception as exc:  # ONNX Runtime's own error: one line, as evaluate and bench say it
            if not is_ort_error(exc):
                raise
            raise UserError(f"{path} failed in ONNX Runtime ({ort_reason(exc)}); re-export the bundle") from None
    for name, one, two in zip(missing, *measured, strict=True):
        dims = [a + (c - a) * (batch - 1) for a, c in zip(one.shape, two.shape, strict=False)]
        if one.ndim != two.ndim or min(dims, default=0) < 0:
            raise UserError(f"{path}: {name} changes rank or shrinks with the batch; re-export the bundle")
        model.graph.value_info.append(
            onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(one.dtype), dims)
        )
    return model


def _elem_bytes(elem_type: int, precision: str, matrix: bool, fallback: int) -> int:
    import onnx

    if elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize
    if precision == "fp32":
        return 4
    if precision == "fp16":
        return 2
    return 1 if matrix else fallback


def node_costs(model, precision: str = "fp32", fallback_bytes: int = 2) -> list[NodeCost]:
    """FLOPs and bytes of every node of a shape-inferred model (see the module docstring)."""
    shapes = _shapes(model)
    consumers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    producer_matrix = {}
    costs = []
    for n in model.graph.node:
        op = n.op_type
        ins = [shapes.get(i) for i in n.input if i]
        outs = [shapes.get(o) for o in n.output if o]
        out_el = sum(_numel(s[0]) for s in outs if s)
        in_el = sum(_numel(s[0]) for s in ins if s)
        matrix = op in MATRIX_OPS
        if op in ("Conv", "ConvTranspose") and len(ins) > 1 and ins[1]:
            w = ins[1][0]
            flops = 2.0 * (out_el if op == "Conv" else (ins[0] and _numel(ins[0][0]) or 0)) * _numel(w[1:])
        elif op == "MatMul" and ins and ins[0]:
            flops = 2.0 * out_el * ins[0][0][-1]
        elif op == "Gemm" and ins and ins[0]:
            a = ins[0][0]
            trans_a = next((at.i for at in n.attribute if at.name == "transA"), 0)
            flops = 2.0 * out_el * (a[0] if trans_a else a[-1])
        elif op in VIEW_OPS:
            flops = 0.0
        elif op in TRANSCENDENTAL:
            flops = 4.0 * out_el
        elif op in HEAVY:
            flops = 8.0 * out_el
        elif op in REDUCE or op in POOL:
            flops = float(in_el)
        else:
            flops = float(out_el)
        nbytes = 0.0
        for s in ins + outs:
            if s:
                nbytes += _numel(s[0]) * _elem_bytes(s[1], precision, matrix, fallback_bytes)
        view = op in VIEW_OPS
        fused = False
        if op in FUSABLE and n.input and producer_matrix.get(n.input[0]) and consumers.get(n.input[0], 0) == 1:
            fused = True
            src = shapes.get(n.input[0])
            # The fused node reads its extra operand only (bias, scale); the intermediate never hits memory.
            if src:
                nbytes -= 2 * _numel(src[0]) * _elem_bytes(src[1], precision, True, fallback_bytes)
            nbytes = max(nbytes, 0.0)
        for o in n.output:
            producer_matrix[o] = matrix or (fused and producer_matrix.get(n.input[0], False))
        costs.append(NodeCost(n.name or op, op, flops, 0.0 if view else nbytes, matrix, fused, view))
    return costs


def peak_activation_bytes(model, precision: str, fallback_bytes: int) -> tuple[float, float]:
    """(weight bytes, peak bytes of live activations) over the topological order."""
    shapes = _shapes(model)
    g = model.graph
    inits = {i.name for i in g.initializer}
    matrix_weights = {n.input[1] for n in g.node if n.op_type in MATRIX_OPS and len(n.input) > 1}
    weights = sum(
        _numel(shapes[i][0]) * _elem_bytes(shapes[i][1], precision, i in matrix_weights, fallback_bytes)
        for i in inits
        if i in shapes
    )
    last_use = {}
    for idx, n in enumerate(g.node):
        for i in n.input:
            last_use[i] = idx
    for o in g.output:
        last_use[o.name] = len(g.node)

    def size(name):
        s = shapes.get(name)
        return _numel(s[0]) * _elem_bytes(s[1], precision, False, fallback_bytes) if s else 0

    live = {v.name: size(v.name) for v in g.input if v.name not in inits}
    peak = sum(live.values())
    for idx, n in enumerate(g.node):
        for o in n.output:
            live[o] = size(o)
        peak = max(peak, sum(live.values()))
        for name in [k for k in live if last_use.get(k, -1) <= idx]:
            del live[name]
    return float(weights), float(peak)


def estimate_model(path: str | Path, profile: DeviceProfile, precision: str, batch: int) -> dict:
    """Estimate one ONNX model on a profile; returns latency and memory with their breakdown."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    check_precision(profile, precision)
    fallback = 4 if profile.key == "host" else 2
    model = load_with_batch(path, batch)
    costs = node_costs(model, precision, fallback)
    matrix_rate = {
        "fp32": profile.fp32_tflops,
        # CPU: ONNX Runtime has no FP16 kernels there, so FP16 runs at the FP32 rate.
        "fp16": profile.fp32_tflops if profile.key == "host" else profile.fp16_dense_tflops,
        "int8": profile.int8_dense_tops or profile.fp32_tflops,
    }[precision] * 1e12
    other_rate = profile.fp32_tflops * 1e12
    bw = profile.memory_bandwidth_gbs * 1e9
    cache_bw = (profile.cache_bandwidth_gbs or profile.memory_bandwidth_gbs) * 1e9
    compute_s = memory_s = overhead_s = 0.0
    launches = 0
    for c in costs:
        if c.view:
            continue
        t_c = c.flops / (matrix_rate if c.matrix else other_rate)
        t_m = c.bytes / (cache_bw if c.bytes <= profile.cache_mb * MIB else bw)
        if t_c >= t_m:
            compute_s += t_c
        else:
            memory_s += t_m
        if not c.fused:
            launches += 1
            overhead_s += profile.launch_overhead_us * 1e-6
    weights, peak = peak_activation_bytes(model, precision, fallback)
    total = compute_s + memory_s + overhead_s
    parts = {"compute": compute_s, "memory": memory_s, "overhead": overhead_s}
    return {
        "latency_ms": round(total * 1e3, 5),
        "compute_ms": round(compute_s * 1e3, 5),
        "memory_ms": round(memory_s * 1e3, 5),
        "overhead_ms": round(overhead_s * 1e3, 5),
        "bound": max(parts, key=parts.get),
        "nodes": len(costs),
        "launches": launches,
        "gflops": round(sum(c.flops for c in costs) / 1e9, 6),
        "mbytes_moved": round(sum(c.bytes for c in costs) / MIB, 4),
        "memory_mb": round((weights + peak) / MIB, 4),
        "weights_mb": round(weights / MIB, 4),
        "peak_activations_mb": round(peak / MIB, 4),
    }


def check_precision(profile: DeviceProfile, precision: str) -> None:
    """INT8 on a module without fast INT8 is refused with one line (DESIGN.md section 5)."""
    if precision == "int8" and not profile.fast_int8:
        raise UserError(
            f"{profile.name} ({profile.gpu_arch}, compute capability {profile.compute_capability}) has no fast "
            "INT8 in TensorRT; estimate or build fp32/fp16 for it instead"
        )


def default_precisions(profile: DeviceProfile) -> list[str]:
    if profile.key == "host":
        return ["fp32", "int8"]
    return ["fp32", "fp16"] + (["int8"] if profile.fast_int8 else [])


def model_for(bundle, name: str, profile: DeviceProfile, precision: str) -> Path:
    """The graph to estimate: the FP32 graph (TensorRT folds the Q/DQ pairs into INT8 kernels), except INT8
    on the host, where ONNX Runtime runs the Q/DQ model itself (its Quantize/Dequantize nodes cost time)."""
    if profile.key == "host" and precision == "int8":
        return bundle.model_path(name, "int8")
    return bundle.model_path(name, "fp32")


def estimate_bundle(
    bundle: str | Path,
    profile: DeviceProfile,
    precisions: list[str] | None = None,
    batches: tuple[int, ...] = (1,),
) -> dict:
    """Estimates for every model of a bundle, every precision and batch; labelled as an estimate."""
    b = Bundle.open(bundle)
    # On the host ONNX Runtime runs the bundle's INT8 (Q/DQ) graphs themselves: without them there is
    # nothing INT8 to estimate (on a Jetson TensorRT builds INT8 from the FP32 graph).
    host_int8 = profile.key != "host" or "int8" in b.manifest["precisions"]
    if precisions is None:
        precisions = [p for p in default_precisions(profile) if p != "int8" or host_int8]
    for p in precisions:
        if p not in PRECISIONS:
            raise UserError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
        check_precision(profile, p)
        if p == "int8" and not host_int8:
            raise UserError(f"{bundle} holds no INT8 models to run on the host; export it with --int8")
    rows = []
    for name in ("encoder", "tx", "rx"):
        recs = b.manifest["models"][name]
        for p in precisions:
            path = model_for(b, name, profile, p)
            int8 = "int8" in recs and path == b.model_path(name, "int8")
            read_model(path, recs["int8" if int8 else "fp32"])
            for batch in batches:
                rows.append({"model": name, "precision": p, "batch": batch, **estimate_model(path, profile, p, batch)})
    return {
        "kind": "estimate",
        "device": profile.key,
        "device_name": profile.name,
        "method": METHOD,
        "profile": {
            k: getattr(profile, k)
            for k in (
                "fp32_tflops",
                "fp16_dense_tflops",
                "int8_dense_tops",
                "memory_bandwidth_gbs",
                "cache_bandwidth_gbs",
                "cache_mb",
                "launch_overhead_us",
            )
        },
        "bundle": Path(bundle).resolve().name,  # the name: a result names no absolute path
        "results": rows,
    }


# ---- the host profile: measured on this machine with the one timing protocol ----------------------------


def _graph(nodes, inputs, outputs, inits=()) -> bytes:
    from onnx import helper

    g = helper.make_graph(nodes, "probe", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", DEFAULT_OPSET)])
    m.ir_version = 8
    return m.SerializeToString()


def _probe(sess, feeds: dict, seconds: float) -> float:
    """Median ms of one call, by :func:`rkd_edge.devices.latency.measure`."""
    r = measure(lambda: sess.run(None, feeds), 1, warmup_s=seconds / 4, min_seconds=seconds, min_iterations=5)
    return r["p50_ms"]


def measure_host(seconds: float = 1.0, threads: int = 0) -> dict:
    """Peak-ish rates of this CPU through ONNX Runtime (the back end the host estimate is checked on).

    FP32: a 512^3 MatMul; INT8: the same as MatMulInteger (the kernel ONNX Runtime's Q/DQ MatMul fuses
    to); DRAM bandwidth: an Add of two 8 M-element float vectors (three 32 MB streams); cache bandwidth:
    the same on 128 K elements (1.5 MB, used for nodes moving up to 2 MB); launch overhead: a chain of
    64 Adds on 16-element tensors, per node.
    """
    import onnx
    from onnx import TensorProto, helper

    n = 512
    rng = np.random.default_rng(0)
    mm = _graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        [onnx.numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "b")],
    )
    t = _probe(cpu_session(mm, threads), {"a": rng.standard_normal((n, n)).astype(np.float32)}, seconds)
    fp32 = 2 * n**3 / (t * 1e-3)
    mmi = _graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
        [onnx.numpy_helper.from_array(rng.integers(-127, 127, (n, n), dtype=np.int8), "b")],
    )
    t = _probe(cpu_session(mmi, threads), {"a": rng.integers(0, 255, (n, n), dtype=np.uint8)}, seconds)
    int8 = 2 * n**3 / (t * 1e-3)
    m = 8 * 2**20
    add = _graph(
        [helper.make_node("Add", ["x", "y"], ["z"])],
        [helper.make_tensor_value_info(v, TensorProto.FLOAT, [m]) for v in ("x", "y")],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [m])],
    )
    feeds = {v: np.ones(m, np.float32) for v in ("x", "y")}
    t = _probe(cpu_session(add, threads), feeds, seconds)
    bw = 3 * 4 * m / (t * 1e-3)
    mc = 128 * 1024
    addc = _graph(
        [helper.make_node("Add", ["x", "y"], ["z"])],
        [helper.make_tensor_value_info(v, TensorProto.FLOAT, [mc]) for v in ("x", "y")],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [mc])],
    )
    t = _probe(cpu_session(addc, threads), {v: np.ones(mc, np.float32) for v in ("x", "y")}, seconds)
    cache_bw = 3 * 4 * mc / (t * 1e-3)
    k = 64
    chain = [helper.make_node("Add", [f"t{i}", "one"], [f"t{i + 1}"]) for i in range(k)]
    ov = _graph(
        chain,
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info(f"t{k}", TensorProto.FLOAT, [1, 16])],
        [onnx.numpy_helper.from_array(np.ones((1, 16), np.float32), "one")],
    )
    t = _probe(cpu_session(ov, threads), {"t0": np.zeros((1, 16), np.float32)}, seconds)
    return {
        "fp32_tflops": fp32 / 1e12,
        "int8_dense_tops": int8 / 1e12,
        "memory_bandwidth_gbs": bw / 1e9,
        "cache_bandwidth_gbs": cache_bw / 1e9,
        "cache_mb": 2.0,
        "launch_overhead_us": t * 1e3 / k,
        "method": " ".join(measure_host.__doc__.split("\n\n")[1].split()),
    }


def host_profile(seconds: float = 1.0, threads: int = 0, rates: dict | None = None) -> DeviceProfile:
    """A :class:`DeviceProfile` for this machine's CPU from :func:`measure_host` (or given ``rates``)."""
    r = rates or measure_host(seconds, threads)
    src = "measured on this host: " + r.get("method", "given rates")
    cores = os.cpu_count() or 1
    return DeviceProfile(
        key="host",
        name=f"host CPU ({host_cpu()}, {cores} threads)",
        gpu_arch="none (CPU, ONNX Runtime)",
        compute_capability="-",
        fast_int8=True,
        jetpack="-",
        tensorrt="-",
        max_onnx_opset=21,
        memory_gb=(),
        sm_count=0,
        cuda_cores=0,
        tensor_cores=0,
        gpu_clock_ghz=0.0,
        memory_bandwidth_gbs=r["memory_bandwidth_gbs"],
        fp32_tflops=r["fp32_tflops"],
        fp16_dense_tflops=r["fp32_tflops"],
        int8_dense_tops=r["int8_dense_tops"],
        cpu_cores=cores,
        cpu=host_cpu(),
        power_modes=(),
        l4t="-",
        match=(),
        launch_overhead_us=r["launch_overhead_us"],
        cache_bandwidth_gbs=r.get("cache_bandwidth_gbs"),
        cache_mb=r.get("cache_mb", 0.0),
        sources={
            k: src
            for k in (
                "fp32_tflops",
                "int8_dense_tops",
                "memory_bandwidth_gbs",
                "cache_bandwidth_gbs",
                "launch_overhead_us",
            )
        },
    )


def resolve_profile(name: str, seconds: float = 1.0) -> DeviceProfile:
    """``host`` is measured now; any other name is a Jetson profile (unknown names: one line, exit 2)."""
    return host_profile(seconds) if name.lower() == "host" else get_profile(name)


def to_dict(costs: list[NodeCost]) -> list[dict]:
    return [asdict(c) for c in costs]
