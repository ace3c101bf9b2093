"""rkd-edge tx / rx: the wire format, the numpy channels, reassembly, a hostile link, the CLI end to end."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

from rkd_edge.errors import UserError
from rkd_edge.link import wire
from rkd_edge.link.rx import Receiver
from rkd_edge.link.sources import PNG_SIGNATURE, conform, read_image, read_png, read_pnm, resize
from rkd_edge.link.transport import Reassembler, StreamSplitter
from rkd_edge.runtime import Runtime
from rkd_edge.runtime.bundle import FORMAT
from rkd_edge.runtime.channel import Draws, NumpyChannel
from tests.conftest import fill_disk

BID = "0123456789abcdef"
# The CLI in a fresh process; at exit it says whether torch was ever imported.
CLI = (
    "import atexit, sys; atexit.register(lambda: print('TORCH-IMPORTED', 'torch' in sys.modules, file=sys.stderr)); "
    "from rkd_edge.cli import main; main()"
)


def frame_bytes(fid=0, k=4, dtype="float16", label=3, bid=BID, snr=5.0, seed=0) -> bytes:
    sym = np.random.default_rng(seed).standard_normal((k, 2)).astype(np.float32)
    return wire.encode_frame(
        frame_id=fid, timestamp_ns=time.time_ns(), bundle_id=bid, snr_db=snr, channel="awgn", symbols=sym,
        dtype=dtype, label=label,
    )  # fmt: skip


# -- a small real bundle: hand-built ONNX graphs with the exported models' interface, a hashed manifest ------------
# (seconds to build; the trained quickstart bundle goes through the same commands in benchmarks/link.py and in
# the slow test at the end)


def _save(root: Path, name: str, nodes, inputs, outputs, inits: dict) -> None:
    tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    model = oh.make_model(oh.make_graph(nodes, name, inputs, outputs, tensors), opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, root / "models" / f"{name}.onnx")


def _declared(root: Path, name: str) -> dict:
    """A model's ``inputs`` / ``outputs`` as a manifest declares them, read from its graph."""
    graph = onnx.load(str(root / "models" / f"{name}.onnx")).graph
    dtypes = {TensorProto.FLOAT: "float32", TensorProto.INT64: "int64"}

    def meta(v) -> dict:
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        return {"name": v.name, "dtype": dtypes[v.type.tensor_type.elem_type], "shape": dims}

    return {"inputs": [meta(v) for v in graph.input], "outputs": [meta(v) for v in graph.output]}


def build_bundle(root: Path, K: int = 16, D: int = 12, N: int = 10, S: int = 8, C: int = 1) -> Path:
    """encoder: image [B, C, S, S] -> tanh(linear) [B, D]; tx: linear -> [B, K, 2], mask from k, unit power over the
    active symbols; rx: linear over the masked symbols -> logits [B, N]."""
    rng = np.random.default_rng(0)
    (root / "models").mkdir(parents=True)
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    vi = oh.make_tensor_value_info
    n = oh.make_node
    _save(
        root, "encoder",
        [n("Flatten", ["image"], ["flat"]), n("MatMul", ["flat", "W"], ["z"]), n("Tanh", ["z"], ["features"])],
        [vi("image", f32, ["batch", C, S, S])], [vi("features", f32, ["batch", D])],
        {"W": rng.standard_normal((C * S * S, D)).astype(np.float32) * 0.3},
    )  # fmt: skip
    _save(
        root, "tx",
        [n("MatMul", ["features", "W"], ["z"]), n("Reshape", ["z", "shape"], ["z3"]),
         n("Unsqueeze", ["k", "ax1"], ["k2"]), n("Less", ["pos", "k2"], ["lt"]), n("Cast", ["lt"], ["mask"], to=f32),
         n("Unsqueeze", ["mask", "ax2"], ["m3"]), n("Mul", ["z3", "m3"], ["zm"]), n("Mul", ["zm", "zm"], ["sq"]),
         n("ReduceSum", ["sq", "ax12"], ["e"]), n("ReduceSum", ["m3", "ax12"], ["cnt"]), n("Div", ["e", "cnt"], ["p"]),
         n("Add", ["p", "eps"], ["pe"]), n("Sqrt", ["pe"], ["rt"]), n("Div", ["zm", "rt"], ["symbols"])],
        [vi("features", f32, ["batch", D]), vi("snr_db", f32, ["batch"]), vi("k", i64, ["batch"]),
         vi("channel", i64, ["batch"])],
        [vi("symbols", f32, ["batch", K, 2]), vi("mask", f32, ["batch", K])],
        {"W": rng.standard_normal((D, 2 * K)).astype(np.float32), "shape": np.array([-1, K, 2], np.int64),
         "ax1": np.array([1], np.int64), "ax2": np.array([2], np.int64), "ax12": np.array([1, 2], np.int64),
         "pos": np.arange(K, dtype=np.int64).reshape(1, K), "eps": np.array(1e-9, np.float32)},
    )  # fmt: skip
    _save(
        root, "rx",
        [n("Unsqueeze", ["mask", "ax2"], ["m3"]), n("Mul", ["symbols", "m3"], ["ym"]), n("Flatten", ["ym"], ["flat"]),
         n("MatMul", ["flat", "W"], ["logits"])],
        [vi("symbols", f32, ["batch", K, 2]), vi("mask", f32, ["batch", K]), vi("snr_db", f32, ["batch"]),
         vi("channel", i64, ["batch"])],
        [vi("logits", f32, ["batch", N])],
        {"W": rng.standard_normal((2 * K, N)).astype(np.float32), "ax2": np.array([2], np.int64)},
    )  # fmt: skip
    files = {
        f"models/{p.name}": {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
        for p in sorted((root / "models").iterdir())
    }
    manifest = {
        "format": FORMAT,
        "models": {m: {"fp32": {"file": f"models/{m}.onnx", **_declared(root, m)}} for m in ("encoder", "tx", "rx")},
        "precisions": ["fp32"],
        "default_precision": "fp32",
        "normalisation": {"mean": [0.5], "std": [0.25], "size": S, "channels": C},
        "classes": [str(i) for i in range(N)],
        "channel_types": ["identity", "awgn", "rayleigh", "rician"],
        "symbols": {"max": K, "set": [4, 8, 16], "csi_input": False},
        "channel": {"rayleigh_mode": "block", "csi": "zf"},
        "files": files,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("link") / "bundle")


# -- numpy channels = torch channels -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["identity", "awgn", "rayleigh", "rician"])
@pytest.mark.parametrize("mode", ["block", "fast"])
@pytest.mark.parametrize("csi", ["zf", "mmse", "decoder"])
def test_numpy_channel_equals_torch_channel_given_the_same_draws(name, mode, csi):
    import torch

    from rkd_edge.channel import create_channel

    b, k = 6, 9
    x = torch.randn(b, k, 2, generator=torch.Generator().manual_seed(1))
    mask = (torch.arange(k) < torch.tensor([9, 3, 1, 5, 6, 9]).view(-1, 1)).float()
    snr = torch.tensor([-5.0, 0, 5, 10, 20, 3])
    out = create_channel(name, mode=mode, csi=csi, k_factor=2.0)(x, snr, mask, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the same normals, drawn in the torch channel's order
    fading = (
        torch.randn(b, 1 if mode == "block" else k, 2, generator=g).numpy() if name in ("rayleigh", "rician") else None
    )
    noise = torch.randn(b, k, 2, generator=g).numpy() if name != "identity" else None
    ch = NumpyChannel(name, mode=mode, csi=csi, k_factor=2.0)
    y, h = ch(x.numpy(), snr.numpy(), mask.numpy(), draws=Draws(fading, noise))
    np.testing.assert_allclose(y, out.y.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h, out.csi.numpy(), rtol=1e-6, atol=1e-6)
    assert ch.describe() == create_channel(name, mode=mode, csi=csi, k_factor=2.0).describe()


@pytest.mark.parametrize("name,mode", [("awgn", "block"), ("rayleigh", "block"), ("rician", "fast")])
def test_numpy_channel_draws_do_not_depend_on_grouping(name, mode):
    """A receiver decodes whatever frames are queued: one call of 5 samples and calls of 1, 3 and 1 from the
    same seed must give the same channel for every sample (rx --seed reproducible whatever its batching)."""
    x = np.random.default_rng(0).standard_normal((5, 8, 2)).astype(np.float32)
    ch = NumpyChannel(name, mode=mode)
    whole, h_whole = ch(x, 0.0, rng=np.random.default_rng(4))
    rng = np.random.default_rng(4)
    parts = [ch(x[a:b], 0.0, rng=rng) for a, b in ((0, 1), (1, 4), (4, 5))]
    np.testing.assert_array_equal(whole, np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(h_whole, np.concatenate([p[1] for p in parts]))


def test_numpy_channel_seeded_and_snr_convention():
    x = np.zeros((400, 500, 2), np.float32)
    x[..., 0] = 1.0  # unit power
    ch = NumpyChannel("awgn")
    y1, _ = ch(x, 10.0, rng=np.random.default_rng(3))
    y2, _ = ch(x, 10.0, rng=np.random.default_rng(3))
    assert np.array_equal(y1, y2)
    n = y1 - x
    assert abs(10 * np.log10(1.0 / (n**2).sum(-1).mean()) - 10.0) < 0.05  # Es/N0 per complex symbol
    assert abs(n[..., 0].var() / n[..., 1].var() - 1) < 0.02


# -- the wire format -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "int8"])
@pytest.mark.parametrize("label", [None, 7])
def test_wire_round_trip(dtype, label):
    sym = np.random.default_rng(0).standard_normal((16, 2)).astype(np.float32)
    data = wire.encode_frame(
        frame_id=2**40 + 5, timestamp_ns=123456789, bundle_id=BID, snr_db=-3.5, channel="rayleigh", symbols=sym,
        dtype=dtype, label=label,
    )  # fmt: skip
    assert len(data) == wire.HEADER_BYTES + 16 * 2 * (2 if dtype == "float16" else 1) + 4
    assert wire.frame_length(data[: wire.HEADER_BYTES]) == len(data)
    f = wire.decode_frame(data, BID, max_k=16)
    assert (f.frame_id, f.timestamp_ns, f.bundle_id, f.snr_db, f.channel, f.k, f.dtype, f.label) == (
        2**40 + 5, 123456789, BID, -3.5, "rayleigh", 16, dtype, label,
    )  # fmt: skip
    tol = np.abs(sym).max() / 127 / 2 + 1e-6 if dtype == "int8" else np.abs(sym).max() * 2**-11
    assert np.abs(f.symbols - sym).max() <= tol


def test_wire_refusals_are_named():
    good = frame_bytes()
    cases = {
        "crc": good[:-5] + bytes([good[-5] ^ 1]) + good[-4:],
        "truncated": good[:-3],
        "malformed": b"XXXX" + good[4:],
        "foreign": frame_bytes(bid="fedcba9876543210"),
        "oversized": frame_bytes(k=40),
    }
    for reason, data in cases.items():
        with pytest.raises(wire.WireError) as e:
            wire.decode_frame(data, BID, max_k=16)
        assert e.value.reason == reason
    bad_version = bytearray(good)
    bad_version[4] = 2
    with pytest.raises(wire.WireError, match="version 2"):
        wire.decode_frame(bytes(bad_version), BID)


KEY = bytes(range(32))


def test_a_keyed_frame_is_accepted_only_under_its_key():
    """The CRC finds noise, not forgery: with a key, a frame without the tag, under another key, or altered
    with its CRC mended is ``unauthenticated``; a receiver without a key still reads a tagged frame."""
    sym = np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)
    fields = {"frame_id": 1, "timestamp_ns": 7, "bundle_id": BID, "snr_db": 2.0, "channel": "awgn", "symbols": sym}
    tagged = wire.encode_frame(**fields, key=KEY)
    assert len(tagged) == len(wire.encode_frame(**fields)) + wire.TAG_BYTES
    assert wire.frame_length(tagged[: wire.HEADER_BYTES]) == len(tagged)
    f = wire.decode_frame(tagged, BID, key=KEY)
    assert f.tagged and np.array_equal(f.symbols, wire.decode_frame(tagged, BID).symbols)  # keyless: not checked
    forged = bytearray(tagged[:-4])
    forged[32:36] = struct.pack("<f", 30.0)  # the SNR the decoder is told, changed by someone without the key
    cases = {
        "the frame has no tag": wire.encode_frame(**fields),
        "does not match": wire.encode_frame(**fields, key=bytes(32)),
        "was altered": _with_crc(bytes(forged)),
    }
    for needle, data in cases.items():
        with pytest.raises(wire.WireError, match=needle) as e:
            wire.decode_frame(data, BID, key=KEY)
        assert e.value.reason == "unauthenticated"


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_reserved_fields_and_an_overflowing_int8_scale_are_malformed(recwarn):
    """Reserved fields are a later version's: refused, not read as version 1. A forged int8 scale that
    overflows float32 is malformed, without a numpy warning on the receiver's log."""
    good = frame_bytes()
    body = bytearray(good[:-4])
    body[38] = 1  # the header's reserved uint16
    with pytest.raises(wire.WireError, match="reserved field 0x0001 is not 0") as e:
        wire.decode_frame(_with_crc(bytes(body)), BID, max_k=16)
    assert e.value.reason == "malformed"
    body = bytearray(frame_bytes(dtype="int8")[:-4])
    body[44:48] = struct.pack("<f", 3e38)  # scale * 127 > float32's largest
    body[52:60] = bytes([127]) * 8
    with pytest.raises(wire.WireError, match="non-finite") as e:
        wire.decode_frame(_with_crc(bytes(body)), BID, max_k=16)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    for at, value, needle in (
        (44, struct.pack("<f", 2.0), "bad scale 2.0 for a float16"),
        (40, b"\x05\x00\x00\x00", "label 5 without"),
    ):
        body = bytearray(frame_bytes(label=None)[:-4])
        body[at : at + len(value)] = value
        with pytest.raises(wire.WireError, match=needle):
            wire.decode_frame(_with_crc(bytes(body)), BID, max_k=16)
    frag = wire.fragment(good, 0)[0]
    assert wire.parse_fragment(frag).frame_bytes == len(good)
    for at in (5, 10):
        bad = bytearray(frag)
        bad[at] = 1
        with pytest.raises(wire.WireError, match="reserved fields are not 0"):
            wire.parse_fragment(bytes(bad))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_parsers_raise_only_wire_errors(data):
    for parse in (lambda d: wire.decode_frame(d, BID, 16), wire.parse_fragment, wire.frame_length):
        with contextlib.suppress(wire.WireError):
            parse(data)


# -- a receiver fed by hand (no network): real Runtime over a real bundle ---------------------------------------


@pytest.fixture(scope="module")
def runtime(bundle):
    return Runtime(str(bundle))


def receiver(rt, **kw) -> tuple[Receiver, io.StringIO]:
    out = io.StringIO()
    log = io.StringIO()
    from rkd_edge.link.transport import RateLimitedLog

    return Receiver(rt, out, log=RateLimitedLog("rx", 5.0, log), **kw), out


def real_frames(rt, n, dtype="float16", start=0, bid=None, k=None, key=None):
    """n frames of real tx-model symbols (random images), labels 0..n-1 mod classes (tagged under ``key``)."""
    imgs = np.random.default_rng(start).integers(0, 256, (n, rt.size, rt.size, rt.channels), dtype=np.uint8)
    sym, _ = rt.transmit(rt.encode(imgs), 10.0, k or rt.max_symbols)
    return [
        wire.encode_frame(
            frame_id=start + i, timestamp_ns=time.time_ns(), bundle_id=bid or rt.bundle.bundle_id, snr_db=10.0,
            channel="awgn", symbols=sym[i, : k or rt.max_symbols], dtype=dtype, label=i % len(rt.classes), key=key,
        )
        for i in range(n)
    ]  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_receive_loop_never_raises(runtime, data):
    rx, _ = receiver(runtime)
    good = real_frames(runtime, 1)[0]
    raw = data.draw(
        st.one_of(
            st.binary(max_size=200),
            st.builds(
                lambda i, b: good[:i] + bytes([b]) + good[i + 1 :], st.integers(0, len(good) - 1), st.integers(0, 255)
            ),
            st.builds(lambda n: good[:n], st.integers(0, len(good))),
        )
    )
    as_fragment = data.draw(st.booleans())
    if as_fragment:
        for d in wire.fragment(raw, 1, max_datagram=data.draw(st.integers(25, 200))):
            rx.ingest_datagram(d, ("10.0.0.1", 1))
        rx.ingest_datagram(raw, ("10.0.0.1", 1))  # the same bytes as a bare datagram
    else:
        rx.ingest_frame(raw, ("10.0.0.1", 1))
    rx.expire(time.monotonic() + 10)
    rx.flush()
    assert rx.counters["internal"] == 0
    assert not rx.reassembler.pending


def test_foreign_bundle_refused_and_logged_once(runtime):
    rx, out = receiver(runtime)
    for d in real_frames(runtime, 50, bid="fedcba9876543210"):
        rx.ingest_frame(d, "peer")
    rx.flush()
    assert rx.counters["foreign"] == 50 and rx.counters["decoded"] == 0 and out.getvalue() == ""
    assert rx.log.lines == 1  # rate-limited: one line for 50 drops
    for d in real_frames(runtime, 3):
        rx.ingest_frame(d, "peer")
    rx.flush()
    assert rx.counters["decoded"] == 3


def test_duplicates_and_reordering_of_frames(runtime):
    rx, out = receiver(runtime)
    frames = real_frames(runtime, 6, dtype="int8")
    for i in (0, 2, 1, 3, 3, 5, 4):
        rx.ingest_frame(frames[i], "peer")
    rx.flush()
    lines = [json.loads(s) for s in out.getvalue().splitlines()]
    assert sorted(r["frame"] for r in lines) == [0, 1, 2, 3, 4, 5]
    assert rx.counters["duplicate"] == 1 and rx.counters["reordered"] == 2
    assert {"frame", "pred", "confidence", "k", "snr_db", "latency_ms", "label"} <= set(lines[0])


def test_a_keyed_receiver_drops_untagged_frames_and_replays_from_any_address(runtime):
    """Without the key a peer that knows the bundle id moved the accuracy at will; with it, only the key's
    holders are decoded, and a captured frame replayed from another address is a duplicate."""
    rx, out = receiver(runtime, key=KEY)
    for d in real_frames(runtime, 5):  # right bundle id, no tag
        rx.ingest_frame(d, ("10.0.0.9", 1))
    rx.flush()
    assert rx.counters["unauthenticated"] == 5 and rx.counters["decoded"] == 0 and out.getvalue() == ""
    frames = real_frames(runtime, 3, key=KEY)
    for d in frames:
        assert rx.ingest_frame(d, ("10.0.0.1", 1))
    assert not rx.ingest_frame(frames[0], ("10.0.0.66", 2))  # the same frame from elsewhere
    rx.flush()
    assert rx.counters["decoded"] == 3 and rx.counters["duplicate"] == 1
    assert rx.summary()["authenticated"] is True


def test_forged_datagrams_under_frame_ids_to_come_do_not_make_real_frames_duplicates(runtime):
    """One forged datagram per upcoming fragment id, from the sender's own address, went first: the genuine,
    keyed frames that followed were all dropped as "duplicate". Only an accepted frame is remembered now."""
    rx, _ = receiver(runtime, key=KEY)
    peer = ("10.0.0.1", 5000)
    real = real_frames(runtime, 4, key=KEY)
    for i, d in enumerate(real):
        forged = wire.fragment(bytes(len(d)), i)[0]  # zeros of the real length, under the real fragment id
        assert not rx.ingest_datagram(forged, peer)
        assert rx.ingest_datagram(wire.fragment(d, i)[0], peer)
    assert not rx.ingest_datagram(wire.fragment(real[0], 0)[0], peer)  # a replay of an accepted one is one
    rx.flush()
    assert rx.counters["decoded"] == 4 and rx.counters["malformed"] == 4 and rx.counters["duplicate"] == 1


def test_hostile_headers_with_valid_crc(runtime):
    """Frames a forger built with a correct CRC: an SNR beyond +-100 dB and a label that is no class are
    dropped as malformed; a timestamp from an unset clock is decoded without a latency; the output stays JSON."""
    rx, out = receiver(runtime)
    sym = real_frames(runtime, 1)[0]
    good = wire.decode_frame(sym, runtime.bundle.bundle_id, runtime.max_symbols)

    def forged(fid, **kw):
        args = dict(
            frame_id=fid, timestamp_ns=time.time_ns(), bundle_id=runtime.bundle.bundle_id, snr_db=10.0,
            channel="awgn", symbols=good.symbols, dtype="float16", label=1,
        )  # fmt: skip
        args.update(kw)
        return wire.encode_frame(**args)

    for fid, kw in enumerate([{"snr_db": 3e38}, {"snr_db": -101.0}, {"label": 12345}, {"label": len(runtime.classes)}]):
        rx.ingest_frame(forged(fid, **kw), "peer")
    assert rx.counters["malformed"] == 4 and rx.counters["frames"] == 0
    rx.ingest_frame(forged(10, timestamp_ns=0), "peer")
    rx.ingest_frame(forged(11, timestamp_ns=2**64 - 1), "peer")
    rx.ingest_frame(forged(12), "peer")
    rx.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]  # json.loads refuses NaN only if asked:
    assert "NaN" not in out.getvalue() and "Infinity" not in out.getvalue()
    assert [r["frame"] for r in lines] == [10, 11, 12]
    assert lines[0]["latency_ms"] is None and lines[1]["latency_ms"] is None and lines[2]["latency_ms"] >= 0
    s = rx.summary()
    assert s["counters"]["unsynced"] == 2 and s["latency_ms"]["window"] == 1
    assert 0 <= s["latency_ms"]["mean_ms"] < 60_000


def test_future_timestamps_neither_count_as_latency_nor_pass_max_age(runtime):
    """A frame dated an hour ahead is from an unsynchronised clock or a forger: no (negative) latency in the
    mean, and with --max-age-ms its age cannot be told, so it is stale."""
    ahead = time.time_ns() + 59 * 60 * 10**9
    frames = real_frames(runtime, 3)
    forged = wire.decode_frame(frames[0], runtime.bundle.bundle_id, runtime.max_symbols)

    def dated(fid, ts):
        return wire.encode_frame(
            frame_id=fid, timestamp_ns=ts, bundle_id=runtime.bundle.bundle_id, snr_db=10.0, channel="awgn",
            symbols=forged.symbols, dtype="float16", label=1,
        )  # fmt: skip

    rx, out = receiver(runtime)
    rx.ingest_frame(dated(10, ahead), "peer")
    rx.ingest_frame(frames[1], "peer")
    rx.flush()
    s = rx.summary()
    assert s["counters"]["unsynced"] == 1 and s["counters"]["decoded"] == 2 and s["latency_ms"]["mean_ms"] >= 0
    rx, _ = receiver(runtime, max_age_ms=100.0)
    assert not rx.ingest_frame(dated(11, ahead), "peer") and rx.counters["stale"] == 1
    assert rx.ingest_frame(frames[2], "peer")


def test_symbols_that_overflow_through_fading_are_dropped_not_fatal(runtime):
    """Finite int8 symbols of ~1e38 (a forged scale, valid CRC) overflow float32 in the fading product: the
    frame is counted malformed and the frames beside it are decoded."""
    huge = wire.encode_frame(
        frame_id=99, timestamp_ns=time.time_ns(), bundle_id=runtime.bundle.bundle_id, snr_db=10.0, channel="awgn",
        symbols=np.full((runtime.max_symbols, 2), 2.5e38, np.float32), dtype="int8", label=1,
    )  # fmt: skip
    for name in ("rayleigh", "rician"):
        overflowed = 0
        for seed in range(12):  # whether the product overflows depends on the fading drawn
            rx, out = receiver(runtime, channel=name, seed=seed)
            for d in [*real_frames(runtime, 2), huge]:
                assert rx.ingest_frame(d, "peer")
            rx.flush()
            assert rx.counters["malformed"] + rx.counters["decoded"] == 3, name
            frames = [json.loads(line)["frame"] for line in out.getvalue().splitlines()]
            assert frames[:2] == [0, 1] and len(frames) == rx.counters["decoded"]
            overflowed += rx.counters["malformed"]
        assert overflowed > 0, name


def test_only_datagrams_that_complete_a_taken_frame_keep_rx_active(runtime):
    """--idle-timeout counted any datagram: a stream of garbage kept a UDP receiver alive forever."""
    rx, _ = receiver(runtime)
    assert not rx.ingest_datagram(b"garbage" * 10, ("10.0.0.1", 1))
    good = real_frames(runtime, 1)[0]
    *head, last = wire.fragment(good, 1, max_datagram=64)
    assert not any(rx.ingest_datagram(d, ("10.0.0.1", 1)) for d in head)  # a frame in pieces: not yet
    assert rx.ingest_datagram(last, ("10.0.0.1", 1))
    assert not rx.ingest_datagram(wire.fragment(good, 2, max_datagram=4096)[0], ("10.0.0.1", 1))  # a duplicate


def test_fragment_loss_reordering_duplication_and_timeout():
    frames = [frame_bytes(fid=i, k=16, seed=i) for i in range(20)]
    frags = [(i, d) for i, f in enumerate(frames) for d in wire.fragment(f, i, max_datagram=40)]
    assert all(len(d) <= 40 for _, d in frags) and len(frags) > 3 * len(frames)
    lost = {3, 11}  # frames missing their fragment 1 (the index is bytes 6-7 of the fragment header)
    sent = [(i, d) for i, d in frags if not (i in lost and d[6] == 1)]
    sent += sent[:5]  # duplicated fragments
    random.Random(0).shuffle(sent)  # reordered across frames
    r = Reassembler(timeout_s=1.0)
    done, drops, errors = {}, [], []
    for _, d in sent:
        try:
            f, ev = r.add(d, "peer", now=0.0)
        except wire.WireError as exc:
            errors.append(exc.reason)
            continue
        drops += ev
        if f is not None:
            done[wire.decode_frame(f, BID).frame_id] = f
            r.accepted(d, "peer")  # as the receiver does once the frame passed its checks
    assert set(done) == set(range(20)) - lost and all(done[i] == frames[i] for i in done)
    assert set(errors) <= {"duplicate"} and len(errors) >= 1
    assert len(r.pending) == 2 and r.expire(now=0.5) == []
    expired = r.expire(now=1.5)
    assert [reason for reason, _ in expired] == ["incomplete", "incomplete"] and not r.pending
    late = [d for i, d in frags if i == 3 and d[6] == 1]
    with pytest.raises(wire.WireError) as e:
        r.add(late[0], "peer", now=2.0)
    assert e.value.reason == "stale"


def test_reassembler_is_bounded():
    r = Reassembler(timeout_s=100.0, max_pending=8)
    evicted = 0
    for i in range(100):
        _, ev = r.add(wire.fragment(frame_bytes(fid=i, k=16), i, 40)[0], "p", now=0.0)
        evicted += len(ev)
    assert len(r.pending) == 8 and evicted == 92 and r.held_bytes <= 8 * 16
    with pytest.raises(wire.WireError) as e:
        r.add(wire.FRAGMENT.pack(wire.FRAGMENT_MAGIC, 1, 0, 0, 2, 0, 1, 10**9) + b"x", "p", 0.0)
    assert e.value.reason == "oversized"


def test_tcp_stream_splitter():
    frames = [frame_bytes(fid=i) for i in range(5)]
    stream = b"".join(frames)
    sp = StreamSplitter()
    got = []
    for i in range(0, len(stream), 7):  # arbitrary segment boundaries
        got += sp.feed(stream[i : i + 7])
    assert got == frames
    # A bad header ends the stream: the whole frames before it still come out, the rest is discarded (not
    # left in the buffer to be counted again as a frame cut short when the connection closes).
    for bad, reason in ((b"GARBAGE" * 10, "malformed"), (frame_bytes(k=4096), "oversized")):
        sp = StreamSplitter(max_frame_bytes=len(frames[0]))
        assert sp.feed(frames[0] + frames[1] + bad) == frames[:2]
        assert sp.error.reason == reason and not sp.buf and sp.feed(frames[2]) == []


def test_tcp_frames_before_a_bad_header_are_decoded_and_the_stream_counted_once(bundle, runtime):
    port = free_port(socket.SOCK_STREAM)
    rx = spawn("rx", str(bundle), "--tcp", "--listen", f"127.0.0.1:{port}", "--idle-timeout", "2")
    wait_listening(rx)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"".join(real_frames(runtime, 2)) + b"GARBAGE" * 20)  # one segment: frames, then garbage
        s.recv(1)  # the receiver closes the connection
    _, rx_err = rx.communicate(timeout=60)
    c = summary_of(rx_err, "rx")["counters"]
    assert rx.returncode == 0 and "Traceback" not in rx_err, rx_err
    assert (c["decoded"], c["malformed"], c["truncated"]) == (2, 1, 0), c


def test_builtin_image_decoders_match_pillow(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for mode, shape in (("L", (13, 9)), ("RGB", (7, 11, 3)), ("RGBA", (5, 6, 4))):
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        a[::3] = a[::3] // 3  # structure, so that PNG picks several filter types
        Image.fromarray(a, mode).save(tmp_path / "x.png")
        want = np.asarray(Image.open(tmp_path / "x.png").convert("L" if mode == "L" else "RGB"))
        got = read_png((tmp_path / "x.png").read_bytes())
        assert np.array_equal(got.squeeze(-1) if mode == "L" else got, want)
    a = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.ppm")
    assert np.array_equal(read_pnm((tmp_path / "x.ppm").read_bytes()), a)
    assert resize(a, 6).shape == (6, 6, 3) and np.array_equal(resize(a[:5], 5), a[:5])


# -- the CLI over real sockets, in fresh processes --------------------------------------------------------------


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(*args, stdin=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLI, *args], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_listening(proc: subprocess.Popen) -> str:
    line = proc.stderr.readline()
    assert "listening on" in line, line + proc.stderr.read()
    return line


def summary_of(stderr: str, side: str) -> dict:
    lines = [s for s in stderr.splitlines() if s.startswith(f"{side}: {{")]
    assert lines, stderr
    return json.loads(lines[-1].split(": ", 1)[1])


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """40 PNG images in class folders named as the bundle's classes (so labels travel), some RGB and 16x16."""
    from PIL import Image

    root = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(1)
    for i in range(40):
        d = root / str(i % 10)
        d.mkdir(exist_ok=True)
        shape = (16, 16, 3) if i % 4 == 0 else (8, 8)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(d / f"{i:03d}.png")
    return root


def test_udp_end_to_end_torch_free_with_labels_and_a_simulated_channel(bundle, digit_folder, tmp_path):
    port = free_port()
    rx = spawn("rx", str(bundle), "--listen", f"127.0.0.1:{port}", "--channel", "rayleigh", "--snr-db", "10",
               "--count", "40", "--out", str(tmp_path / "rx.jsonl"), "--idle-timeout", "60")  # fmt: skip
    wait_listening(rx)
    tx = subprocess.run(
        [sys.executable, "-c", CLI, "tx", str(bundle), str(digit_folder), "--to", f"127.0.0.1:{port}",
         "--snr-db", "10", "--symbols", "8", "--dtype", "int8", "--mtu", "64", "--summary", str(tmp_path / "tx.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    _, rx_err = rx.communicate(timeout=120)
    assert tx.returncode == 0 and rx.returncode == 0, tx.stderr + rx_err
    assert "TORCH-IMPORTED False" in tx.stderr and "TORCH-IMPORTED False" in rx_err
    t, r = json.loads((tmp_path / "tx.json").read_text()), summary_of(rx_err, "rx")
    assert t["frames_sent"] == 40 and t["labelled"] == 40 and t["datagrams"] > 40  # fragmented to 64 bytes
    assert set(t["latency_ms"]) >= {"p50_ms", "p90_ms", "p99_ms", "mean_ms"} and t["throughput_fps"] > 0
    assert r["counters"]["decoded"] == 40 and r["accuracy"]["n"] == 40 and r["channel"]["channel"] == "rayleigh"
    assert r["out"] == "rx.jsonl" and "onnxruntime" in r["versions"] and "numpy" in t["versions"]  # no absolute path
    lines = [json.loads(s) for s in (tmp_path / "rx.jsonl").read_text().splitlines()]
    assert len(lines) == 40 and all(s["k"] == 8 and s["snr_db"] == 10.0 and "label" in s for s in lines)


def test_a_burst_of_64_tcp_senders_is_served_whole(bundle, runtime):
    """64 senders connecting at once (the connection limit), one frame each: a listen queue of 16 and one
    accept per pass reset 28 of them, uncounted; now every frame is decoded."""
    port = free_port(socket.SOCK_STREAM)
    rx = spawn("rx", str(bundle), "--tcp", "--listen", f"127.0.0.1:{port}", "--count", "64", "--idle-timeout", "30")
    wait_listening(rx)
    frames, errors = real_frames(runtime, 64), []
    together = threading.Barrier(64)

    def send(frame: bytes) -> None:
        try:
            together.wait(30)  # all connect at once
            with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
                c.sendall(frame)
                c.shutdown(socket.SHUT_WR)
                c.recv(1)  # until rx closes it
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(f,)) for f in frames]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    _, err = rx.communicate(timeout=60)
    r = summary_of(err, "rx")
    assert not errors and rx.returncode == 0, (errors[:3], err[-2000:])
    assert r["counters"]["decoded"] == 64 and r["dropped"] == 0


def test_datagrams_queued_when_count_is_reached_are_read_and_counted(runtime):
    from rkd_edge.link.rx import _drain

    rx, _ = receiver(runtime, count=2)
    frames = real_frames(runtime, 5)
    for d in frames[:2]:
        rx.ingest_datagram(wire.fragment(d, frames.index(d))[0], ("p", 1))
    rx.flush()
    assert rx.done
    udp = (socket.AF_INET, socket.SOCK_DGRAM)
    with socket.socket(*udp) as sock, socket.socket(*udp) as tx:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        for i, d in enumerate(frames[2:], start=2):
            tx.sendto(wire.fragment(d, i)[0], sock.getsockname())
        time.sleep(0.2)
        _drain(rx, sock)
    assert rx.counters["past_count"] == 3 and rx.counters["decoded"] == 2 and rx.counters["datagrams"] == 5


def test_frames_still_missing_fragments_when_rx_stops_are_counted(runtime):
    """rx stopped (idle, a signal, --count) with frames waiting for fragments: they were in no counter, so
    decoded + dropped fell short of what arrived."""
    from rkd_edge.link.common import StopOnSignal
    from rkd_edge.link.rx import serve

    rx, _ = receiver(runtime, reassembly_timeout_s=60.0)  # not given up on before the stop
    frames = real_frames(runtime, 3)
    udp = (socket.AF_INET, socket.SOCK_DGRAM)
    with socket.socket(*udp) as sock, socket.socket(*udp) as tx:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        for i, d in enumerate(frames):
            parts = wire.fragment(d, i, wire.FRAGMENT_BYTES + 16)
            assert len(parts) > 1
            tx.sendto(parts[0], sock.getsockname())  # the first fragment only
        why = serve(rx, sock, False, StopOnSignal(), idle_timeout_s=0.5)
    c = rx.counters
    assert why.startswith("idle") and c["datagrams"] == 3 and c["decoded"] == 0
    assert c["incomplete"] == 3 and rx.summary()["dropped"] == 3


def test_frames_taken_past_count_are_counted(runtime):
    """rx --count 5 took 64 frames at once and decoded 5: the other 59 vanished from every counter."""
    rx, out = receiver(runtime, count=2)
    for d in real_frames(runtime, 5):
        assert rx.ingest_frame(d, ("10.0.0.1", 1))
    rx.flush()
    c = rx.counters
    assert c["frames"] == 5 and c["decoded"] == 2 and c["past_count"] == 3 and len(out.getvalue().splitlines()) == 2
    assert rx.summary()["dropped"] == 3


def test_tcp_from_stdin_and_signals_end_both_sides_with_counters(bundle, tmp_path):
    port = free_port(socket.SOCK_STREAM)
    rx = spawn("rx", str(bundle), "--tcp", "--listen", f"127.0.0.1:{port}", "--summary", str(tmp_path / "r.json"))
    wait_listening(rx)
    tx = subprocess.Popen(
        [sys.executable, "-c", CLI, "tx", str(bundle), "-", "--tcp", "--to", f"127.0.0.1:{port}", "--snr-db", "5"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    tx.stdin.write(np.random.default_rng(0).integers(0, 256, (25, 8, 8, 1), dtype=np.uint8).tobytes())  # raw frames
    tx.stdin.flush()  # and the pipe stays open: tx waits for more
    lines = [json.loads(rx.stdout.readline()) for _ in range(25)]
    assert [r["frame"] for r in lines] == list(range(25)) and all(r["snr_db"] == 5.0 for r in lines)
    tx.send_signal(signal.SIGINT)  # blocked on an idle pipe: the signal still ends it
    tx_err = tx.communicate(timeout=60)[1].decode()
    rx.send_signal(signal.SIGTERM)
    _, rx_err = rx.communicate(timeout=60)
    assert tx.returncode == 0 and rx.returncode == 0, tx_err + rx_err
    t, r = summary_of(tx_err, "tx"), json.loads((tmp_path / "r.json").read_text())
    assert t["stopped_by"] == "SIGINT" and t["frames_sent"] == 25 and t["labelled"] == 0
    assert r["stopped_by"] == "SIGTERM" and r["counters"]["decoded"] == 25 and "accuracy" not in r
    assert t["datagrams"] == r["counters"]["datagrams"] == 0 and t["bytes"] == r["counters"]["bytes"]  # a stream
    assert "TORCH-IMPORTED False" in tx_err and "TORCH-IMPORTED False" in rx_err


def test_a_full_disk_under_rx_out_ends_rx_with_its_summary_and_one_line(bundle, digit_folder, small_disk):
    """ENOSPC writing the decoded lines ended rx with a bare "No space left on device" and no summary."""
    fill_disk(small_disk)
    port = free_port()
    rx = spawn("rx", str(bundle), "--listen", f"127.0.0.1:{port}", "--count", "40", "--idle-timeout", "20",
               "--out", str(small_disk / "rx.jsonl"))  # fmt: skip
    wait_listening(rx)
    tx = ["tx", str(bundle), str(digit_folder), "--to", f"127.0.0.1:{port}", "--snr-db", "10"]
    subprocess.run([sys.executable, "-c", CLI, *tx], capture_output=True, timeout=120)
    _, err = rx.communicate(timeout=60)
    assert rx.returncode == 2, err[-2000:]
    assert summary_of(err, "rx")["stopped_by"].startswith("output error (No space left on device")
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert errors == [errors[0]] and "Traceback" not in err
    assert errors[0].startswith("error: rx stopped: No space left on device writing --out")


def test_udp_to_a_port_where_nothing_listens_is_said(bundle, digit_folder):
    """UDP has no connection, but the host answers "port unreachable": tx counts what it refused and says
    so (it sent into nothing and exited 0 in silence). Every datagram is sent and counted refused: Linux
    reports the answer on the next send, which used to be lost, so half were counted, the others as sent."""
    port = free_port()  # bound and released: nothing listens there now
    args = ["tx", str(bundle), str(digit_folder), "--to", f"127.0.0.1:{port}", "--snr-db", "10"]
    args += ["--repeat", "--count", "41"]
    proc = subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=120)
    t = summary_of(proc.stderr, "tx")
    assert proc.returncode == 0 and t["frames_sent"] == t["datagrams"] == 41 and t["send_errors"] == 0
    assert t["refused"] == 41  # loopback does not rate-limit ICMP answers
    assert (
        "41 of 41 datagram(s) were refused (port unreachable" in proc.stderr
        and "is rkd-edge rx listening there?" in proc.stderr
    )


def test_a_keyed_link_end_to_end_and_a_sender_with_another_key(bundle, digit_folder, tmp_path):
    """tx and rx with the same --key file: every frame decoded; a sender with another key (or none) is
    counted unauthenticated and decodes nothing."""
    keys = {}
    for name, data in (("ours", os.urandom(32)), ("theirs", os.urandom(32))):
        keys[name] = tmp_path / f"{name}.key"
        keys[name].write_bytes(data)
        keys[name].chmod(0o600)
    port = free_port()
    rx = spawn("rx", str(bundle), "--listen", f"127.0.0.1:{port}", "--count", "40", "--key", str(keys["ours"]),
               "--idle-timeout", "60", "--summary", str(tmp_path / "r.json"))  # fmt: skip
    wait_listening(rx)
    to = ["--to", f"127.0.0.1:{port}", "--snr-db", "10"]
    for key in (["--key", str(keys["theirs"])], []):  # refused first: rx still waits for its 40
        bad = subprocess.run([sys.executable, "-c", CLI, "tx", str(bundle), str(digit_folder), *to, *key],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert bad.returncode == 0, bad.stderr
    time.sleep(0.5)  # UDP: the refused frames are counted before the good ones arrive
    tx = subprocess.run([sys.executable, "-c", CLI, "tx", str(bundle), str(digit_folder), *to, "--key",
                         str(keys["ours"])], capture_output=True, text=True, timeout=120)  # fmt: skip
    _, rx_err = rx.communicate(timeout=120)
    assert tx.returncode == 0 and rx.returncode == 0, tx.stderr + rx_err
    r = json.loads((tmp_path / "r.json").read_text())
    assert summary_of(tx.stderr, "tx")["authenticated"] is True and r["authenticated"] is True
    assert r["counters"]["decoded"] == 40 and r["counters"]["unauthenticated"] == 80, r["counters"]


def test_random_datagrams_do_not_stop_the_receiver(bundle, digit_folder, tmp_path):
    port = free_port()
    rx = spawn("rx", str(bundle), "--listen", f"127.0.0.1:{port}", "--count", "40", "--idle-timeout", "60",
               "--out", str(tmp_path / "o.jsonl"))  # fmt: skip
    wait_listening(rx)
    rng = random.Random(0)
    good = wire.fragment(frame_bytes(k=8), 0)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(10_000):
            kind = i % 4
            if kind == 0:
                d = rng.randbytes(rng.randrange(0, 300))
            elif kind == 1:  # a valid fragment header over garbage
                d = wire.FRAGMENT.pack(wire.FRAGMENT_MAGIC, 1, 0, rng.randrange(3), 3, 0, rng.randrange(1 << 20), 100)
                d += rng.randbytes(rng.randrange(1, 50))
            elif kind == 2:  # a frame with one byte flipped
                j = rng.randrange(len(good))
                d = good[:j] + bytes([good[j] ^ (1 + rng.randrange(255))]) + good[j + 1 :]
            else:
                d = good[: rng.randrange(len(good))]
            s.sendto(d, ("127.0.0.1", port))
            if i % 500 == 0:
                time.sleep(0.02)  # let the kernel queue drain: we test the receiver, not the socket buffer
    time.sleep(0.5)
    tx = subprocess.run(
        [sys.executable, "-c", CLI, "tx", str(bundle), str(digit_folder), "--to", f"127.0.0.1:{port}",
         "--snr-db", "10", "--rate", "400"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    _, rx_err = rx.communicate(timeout=120)
    assert tx.returncode == 0 and rx.returncode == 0, tx.stderr + rx_err
    r = summary_of(rx_err, "rx")
    assert r["counters"]["decoded"] == 40 and r["counters"]["internal"] == 0
    assert r["dropped"] >= 9_000 and r["counters"]["datagrams"] >= 9_000
    assert sum(s.startswith("rx: dropped") for s in rx_err.splitlines()) < 60  # rate-limited
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 40


@pytest.mark.parametrize(
    "args, message",
    [
        (["tx", "{b}", "x.png", "--to", "localhost", "--snr-db", "1"], "HOST:PORT"),
        (["tx", "{b}", "x.png", "--to", "127.0.0.1:70000", "--snr-db", "1"], "out of range"),
        (["tx", "{b}", "x.png", "--to", "127.0.0.1:9", "--snr-db", "nan"], "finite"),
        (["tx", "{b}", "x.png", "--to", "127.0.0.1:9", "--snr-db", "1", "--count", "0"], "--count"),
        (["tx", "/nonexistent/bundle", "x.png", "--to", "127.0.0.1:9", "--snr-db", "1"], "manifest.json"),
        (["tx", "{b}", "/nonexistent.png", "--to", "127.0.0.1:9", "--snr-db", "1"], "does not exist"),
        (["tx", "{b}", "-", "--to", "127.0.0.1:9", "--snr-db", "1", "--symbols", "999"], "--symbols"),
        (["rx", "{b}", "--listen", "127.0.0.1:{busy}"], "already in use"),
        (["rx", "{b}", "--listen", "127.0.0.1:0", "--channel", "rayleigh", "--snr-db", "nan"], "finite"),
        (["rx", "{b}", "--listen", "127.0.0.1:0", "--channel", "weird", "--snr-db", "3"], "unknown --channel"),
        (["rx", "{b}", "--listen", "127.0.0.1:0", "--count", "-1"], "--count"),
        (["rx", "/nonexistent/bundle", "--listen", "127.0.0.1:0"], "manifest.json"),
        (["tx", "{b}", "-", "--to", "127.0.0.1:9", "--snr-db", "1", "--threads", "-1"], "--threads is 0"),
        (["tx", "{b}", "-", "--to", "127.0.0.1:9", "--snr-db", "1", "--send-timeout", "0"], "--send-timeout"),
        (["rx", "{b}", "--listen", "127.0.0.1:0", "--threads", "-1"], "--threads is 0"),
        (["rx", "{b}", "--listen", "127.0.0.1:0", "--idle-timeout", "1e308"], "up to 86,400"),
        (["rx", "{b}", "--listen", "127.0.0.1:0", "--max-age-ms", "nan"], "--max-age-ms"),
        (["rx", "{b}", "--listen", "127.0.0.1:0", "--key", "{key}/short"], "a key is 16 to 4096 bytes"),
        (["rx", "{b}", "--listen", "127.0.0.1:0", "--key", "{key}/open"], "chmod 600"),
        (["tx", "{b}", "-", "--to", "127.0.0.1:9", "--snr-db", "1", "--key", "{key}"], "is a folder"),
        (["tx", "{b}", "-", "--to", "127.0.0.1:9", "--snr-db", "1", "--key", "{key}/none"], "not found"),
        (["tx", "{b}", "-", "--to", "127.0.0.1:9", "--snr-db", "1", "--key", "{key}/fifo"], "not a regular file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(bundle, capsys, tmp_path, args, message):
    from rkd_edge.cli import main

    for name, data, mode in (("short", b"0123456789", 0o600), ("open", bytes(32), 0o644)):
        (tmp_path / name).write_bytes(data)
        (tmp_path / name).chmod(mode)
    os.mkfifo(tmp_path / "fifo", 0o600)  # opening it to read would block
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    try:
        argv = [a.format(b=bundle, busy=busy.getsockname()[1], key=tmp_path) for a in args]
        with pytest.raises(SystemExit) as e:
            main(argv)
    finally:
        busy.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error:") and message in err[0], err


def test_a_busy_port_leaves_no_output_folders(bundle, tmp_path, capsys):
    from rkd_edge.cli import main

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        with pytest.raises(SystemExit) as e:
            out, summary = tmp_path / "new" / "sub" / "o.jsonl", tmp_path / "new2" / "s.json"
            port = busy.getsockname()[1]
            main(["rx", str(bundle), "--listen", f"127.0.0.1:{port}", "--out", str(out), "--summary", str(summary)])
    assert e.value.code == 2 and "already in use" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_existing_out_is_not_replaced(bundle, tmp_path, capsys):
    from rkd_edge.cli import main

    (tmp_path / "o.jsonl").write_text("keep")
    with pytest.raises(SystemExit) as e:
        main(["rx", str(bundle), "--listen", "127.0.0.1:0", "--out", str(tmp_path / "o.jsonl")])
    assert e.value.code == 2 and (tmp_path / "o.jsonl").read_text() == "keep"
    assert os.path.exists(tmp_path / "o.jsonl")


def test_rx_outputs_are_created_exclusively_and_a_killed_rx_leaves_its_lines_in_view(bundle, tmp_path, capsys):
    from rkd_edge.cli import main

    same = tmp_path / "same.json"
    with pytest.raises(SystemExit) as e:
        main(["rx", str(bundle), "--listen", "127.0.0.1:0", "--out", str(same), "--summary", str(same)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "both name" in err[0], err
    # a receiver killed while it writes: what it decoded is in OUT.partial, and the next one does not start over it
    out = tmp_path / "o.jsonl"
    port = free_port(socket.SOCK_STREAM)
    rx = spawn("rx", str(bundle), "--tcp", "--listen", f"127.0.0.1:{port}", "--out", str(out))
    wait_listening(rx)
    frames = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8).tobytes()
    tx = subprocess.run(
        [sys.executable, "-c", CLI, "tx", str(bundle), "-", "--tcp", "--to", f"127.0.0.1:{port}", "--snr-db", "5"],
        input=frames, capture_output=True, timeout=120,
    )  # fmt: skip
    assert tx.returncode == 0, tx.stderr
    deadline = time.monotonic() + 60
    while len((tmp_path / "o.jsonl.partial").read_text().splitlines()) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    rx.kill()
    rx.communicate(timeout=60)
    assert not out.exists() and len((tmp_path / "o.jsonl.partial").read_text().splitlines()) == 5
    with pytest.raises(SystemExit) as e:
        main(["rx", str(bundle), "--listen", "127.0.0.1:0", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "o.jsonl.partial exists" in err[0], err


def _three_frames_once_idle(bundle: Path, port: int) -> subprocess.CompletedProcess:
    """``tx`` of three random frames over TCP to the rx on ``port``, once the connections that hold all its
    places have been idle long enough to make room for one."""
    from rkd_edge.link.rx import EVICT_IDLE_S

    time.sleep(EVICT_IDLE_S + 1)
    frames = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8).tobytes()
    return subprocess.run(
        [sys.executable, "-c", CLI, "tx", str(bundle), "-", "--tcp", "--to", f"127.0.0.1:{port}", "--snr-db", "5"],
        input=frames, capture_output=True, timeout=120,
    )  # fmt: skip


def test_idle_connections_do_not_lock_senders_out_and_a_closed_link_is_one_line(bundle, tmp_path):
    from rkd_edge.link.rx import MAX_CONNECTIONS

    port = free_port(socket.SOCK_STREAM)
    rx = spawn("rx", str(bundle), "--tcp", "--listen", f"127.0.0.1:{port}", "--count", "3", "--idle-timeout", "60")
    wait_listening(rx)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS + 5)]
    try:
        tx = _three_frames_once_idle(bundle, port)
        _, rx_err = rx.communicate(timeout=120)
    finally:
        for c in idle:
            c.close()
    assert tx.returncode == 0 and rx.returncode == 0, tx.stderr.decode() + rx_err
    assert summary_of(rx_err, "rx")["counters"]["decoded"] == 3
    # the receiver gone mid-stream: tx says so in one line after its summary, exit 2
    port = free_port(socket.SOCK_STREAM)
    rx = spawn("rx", str(bundle), "--tcp", "--listen", f"127.0.0.1:{port}", "--count", "2")
    wait_listening(rx)
    frames = np.random.default_rng(1).integers(0, 256, (3000, 8, 8, 1), dtype=np.uint8).tobytes()
    tx = subprocess.run(
        [sys.executable, "-c", CLI, "tx", str(bundle), "-", "--tcp", "--rate", "300", "--to", f"127.0.0.1:{port}",
         "--snr-db", "5"],
        input=frames, capture_output=True, timeout=120,
    )  # fmt: skip
    rx.communicate(timeout=60)
    tx.stderr = tx.stderr.decode()
    errors = [line for line in tx.stderr.splitlines() if line.startswith("error:")]
    assert tx.returncode == 2 and len(errors) == 1 and "receiver closed the connection" in errors[0], tx.stderr
    assert "Traceback" not in tx.stderr and summary_of(tx.stderr, "tx")["frames_sent"] >= 2


def _drip(socks: list[socket.socket], stop, every_s: float = 0.3) -> None:
    """Send each socket one more byte of a valid frame every ``every_s``: busy, but never a whole frame."""
    head = frame_bytes()
    for i in range(len(head)):
        if stop.wait(every_s):
            return
        for c in socks:
            with contextlib.suppress(OSError):
                c.send(head[i : i + 1])


def test_dripping_connections_neither_lock_senders_out_nor_keep_rx_alive(bundle):
    """A byte now and then is not a sender: the connection that completed no frame for longest makes room,
    and --idle-timeout counts whole frames, not bytes."""
    import threading

    from rkd_edge.link.rx import MAX_CONNECTIONS

    port = free_port(socket.SOCK_STREAM)
    rx = spawn("rx", str(bundle), "--tcp", "--listen", f"127.0.0.1:{port}", "--count", "3", "--idle-timeout", "60")
    wait_listening(rx)
    stop = threading.Event()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]
    drip = threading.Thread(target=_drip, args=(socks, stop), daemon=True)
    drip.start()
    try:
        tx = _three_frames_once_idle(bundle, port)
        _, rx_err = rx.communicate(timeout=120)
        assert tx.returncode == 0 and rx.returncode == 0, tx.stderr.decode() + rx_err
        assert summary_of(rx_err, "rx")["counters"]["decoded"] == 3
        # one dripping connection does not keep a receiver with --idle-timeout 2 alive
        port = free_port(socket.SOCK_STREAM)
        rx = spawn("rx", str(bundle), "--tcp", "--listen", f"127.0.0.1:{port}", "--idle-timeout", "2")
        wait_listening(rx)
        one = [socket.create_connection(("127.0.0.1", port))]
        socks += one
        drip2 = threading.Thread(target=_drip, args=(one, stop, 0.2), daemon=True)
        drip2.start()
        _, rx_err = rx.communicate(timeout=30)  # the drip would last 52 * 0.2 s: it ends before it
        assert rx.returncode == 0 and summary_of(rx_err, "rx")["stopped_by"] == "idle for 2 s", rx_err
        assert drip2.is_alive()
    finally:
        stop.set()
        for c in socks:
            c.close()


def test_senders_of_only_refused_frames_do_not_lock_real_senders_out(bundle):
    """64 connections that send well-framed frames with a wrong CRC are not active senders: they make room
    for a real one (and closing one of them while its bytes wait in the same select batch is not fatal)."""
    import threading

    from rkd_edge.link.rx import MAX_CONNECTIONS

    bad = frame_bytes()[:-4] + b"\0\0\0\0"
    port = free_port(socket.SOCK_STREAM)
    rx = spawn("rx", str(bundle), "--tcp", "--listen", f"127.0.0.1:{port}", "--count", "3", "--idle-timeout", "60")
    wait_listening(rx)
    stop = threading.Event()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]

    def garbage():
        while not stop.wait(0.1):
            for c in socks:
                with contextlib.suppress(OSError):
                    c.send(bad)

    threading.Thread(target=garbage, daemon=True).start()
    try:
        tx = _three_frames_once_idle(bundle, port)
        _, rx_err = rx.communicate(timeout=120)
    finally:
        stop.set()
        for c in socks:
            c.close()
    assert tx.returncode == 0 and rx.returncode == 0, tx.stderr.decode() + rx_err
    counters = summary_of(rx_err, "rx")["counters"]
    assert counters["decoded"] == 3 and counters["crc"] > 0 and "Traceback" not in rx_err


def _deaf_receiver(read_first: int = 0):
    """A TCP server that reads ``read_first`` bytes from its one connection, then nothing; a small window."""
    import threading

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    held: list[socket.socket] = []

    def serve():
        conn, _ = srv.accept()
        held.append(conn)
        got = 0
        while got < read_first:
            got += len(conn.recv(read_first - got))

    threading.Thread(target=serve, daemon=True).start()
    return srv, held


def test_a_receiver_that_stops_reading_ends_tx_and_so_does_the_first_signal(bundle, digit_folder, tmp_path):
    """A TCP send waits at most --send-timeout for the receiver to take a byte (one line, exit 2, after the
    summary); the first Ctrl-C ends a send that waits (exit 0, the signal in the summary)."""
    srv, held = _deaf_receiver()
    cmd = [sys.executable, "-c", CLI, "tx", str(bundle), str(digit_folder), "--repeat", "--tcp", "--snr-db", "5"]
    try:
        tx = subprocess.run(
            [*cmd, "--to", f"127.0.0.1:{srv.getsockname()[1]}", "--send-timeout", "1"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        srv.close()
    errors = [line for line in tx.stderr.splitlines() if line.startswith("error:")]
    assert tx.returncode == 2 and len(errors) == 1 and "receiver stopped reading" in errors[0], tx.stderr[-2000:]
    assert "--send-timeout" in errors[0] and "Traceback" not in tx.stderr
    t = summary_of(tx.stderr, "tx")
    assert t["stopped_by"] == "receiver stopped reading (the receiver took nothing for 1 s)" and t["frames_sent"] > 0
    srv, held = _deaf_receiver()
    try:
        proc = subprocess.Popen(
            [*cmd, "--to", f"127.0.0.1:{srv.getsockname()[1]}", "--send-timeout", "600"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        queued, still = -1, 0
        while still < 10:  # blocked once tx's send queue (megabytes on loopback) stops growing for a second
            time.sleep(0.1)
            now = _send_queue(held[0].getpeername()[1]) if held else -1
            still, queued = (still + 1, queued) if now == queued and now > 0 else (0, now)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        srv.close()
    # the deaf side's kernel may still take a frame now and then (it compacts its queue), so the signal can
    # also land between two sends: either way the first one ends tx, at once
    t = summary_of(err, "tx")
    why = t["stopped_by"]
    assert proc.returncode == 0 and (why == "SIGINT" or why.startswith("SIGINT while the receiver was not")), err
    assert took < 10


def _send_queue(port: int) -> int:
    """Bytes queued to send on the loopback TCP socket bound to ``port`` (Linux ``/proc/net/tcp``), or -1."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}":
            return int(fields[4].split(":")[0], 16)
    return -1


def test_split_source_without_pytorch_is_one_line(bundle, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "torch.py").write_text("raise ImportError('no torch on this transmitter')\n")
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-c", CLI, "tx", str(bundle), "split:test", "--to", f"127.0.0.1:{free_port()}",
         "--snr-db", "5"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    lines = [s for s in proc.stderr.splitlines() if not s.startswith("TORCH-IMPORTED")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "split:test needs PyTorch" in lines[0] and "give image files" in lines[0]


def test_an_unreadable_image_mid_stream_still_reports_what_was_sent(bundle, digit_folder, tmp_path):
    bad = tmp_path / "zz.png"
    bad.write_bytes(b"not a png at all")
    summary = tmp_path / "s.json"
    proc = subprocess.run(
        [sys.executable, "-c", CLI, "tx", str(bundle), str(digit_folder), str(bad), "--to",
         f"127.0.0.1:{free_port()}", "--snr-db", "5", "--summary", str(summary)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "zz.png" in errors[0], proc.stderr
    t = json.loads(summary.read_text())
    assert t["frames_sent"] == 40 and t["stopped_by"] == errors[0].replace("error: ", "error: ", 1)
    assert summary_of(proc.stderr, "tx") == t


@pytest.mark.slow
def test_rx_accuracy_agrees_with_evaluate_bundle(tiny_bundle, tmp_path):
    """A trained bundle: split:test tx -> rx over an AWGN channel at 5 dB agrees with evaluate BUNDLE."""
    from tests.conftest import run_cli

    run_cli("-q", "evaluate", str(tiny_bundle), "--channel", "awgn", "--snr", "5", "--symbols", "16", "--trials", "3",
            "--out", str(tmp_path / "ev"), check=True)  # fmt: skip
    ev = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["rows"]
    e = next(r for r in ev if r["method"] == "onnx-fp32" and r["channel"] == "awgn" and r["k"] == 16)
    port = free_port()
    rx = spawn("rx", str(tiny_bundle), "--listen", f"127.0.0.1:{port}", "--channel", "awgn", "--snr-db", "5",
               "--count", "600", "--idle-timeout", "60", "--out", str(tmp_path / "o.jsonl"))  # fmt: skip
    wait_listening(rx)
    tx = subprocess.run(
        [sys.executable, "-c", CLI, "tx", str(tiny_bundle), "split:test", "--repeat", "--count", "600",
         "--to", f"127.0.0.1:{port}", "--snr-db", "5", "--symbols", "16", "--rate", "1000"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    _, rx_err = rx.communicate(timeout=300)
    assert tx.returncode == 0 and rx.returncode == 0, tx.stderr + rx_err
    acc = summary_of(rx_err, "rx")["accuracy"]
    assert acc["n"] == 600
    assert e["ci_low"] <= acc["accuracy"] <= e["ci_high"] or acc["ci95"][0] <= e["accuracy"] <= acc["ci95"][1]


def test_a_pgm_with_a_maxval_below_255_reads_as_pillow_reads_it():
    """maxval is white: the Pillow-free reader gave 0..16 digits as near-black pixels (every prediction 1),
    Pillow scales them to 0..255; values above maxval are clamped as Pillow does."""
    from PIL import Image

    for maxval in range(1, 255):  # every one: the rounding of the halves (127.5 at maxval 100) differs
        data = b"P5\n256 1\n%d\n" % maxval + np.arange(256, dtype=np.uint8).tobytes()
        want = np.asarray(Image.open(io.BytesIO(data)))
        assert np.array_equal(read_pnm(data)[..., 0], want), maxval
    with pytest.raises(ValueError, match="maxval 0"):
        read_pnm(b"P5\n2 1\n0\n" + bytes(2))


@pytest.mark.parametrize(
    "data",
    [b"P5\n8", b"P5\n8 8", b"P5\n8 8 255", b"P5 # comment without end", b"P5\n-1 8 255\n", b"P6\n8 8 255\n" + bytes(5)],
)
def test_a_truncated_pgm_is_refused_not_spun_on(data):
    """A header cut short used to loop forever (``b"".isspace()`` is False) in the reader a Pillow-free
    transmitter uses."""
    with pytest.raises(ValueError, match="PGM/PPM"):
        read_pnm(data)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0, 1), (5, 5, 0), (5, 5, 5)])
def test_a_npy_image_without_pixels_or_with_5_channels_is_refused(tmp_path, shape):
    """An empty axis used to end in an IndexError in resize, no channels in a NaN cast and a frame sent."""
    np.save(tmp_path / "x.npy", np.zeros(shape, np.uint8))
    with pytest.raises(UserError, match="cannot read image"):
        read_image(tmp_path / "x.npy")


def test_a_npy_header_claiming_more_than_its_file_is_refused_before_memory_is_taken(tmp_path):
    """A 64-byte file whose header declares 10^15 pixels used to be read into memory: an out-of-memory line
    with training advice, naming neither the file nor the header."""
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (100000, 100000, 100000), }"
    header = (header.ljust(117) + "\n").encode()
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(64))
    with pytest.raises(UserError, match=r"x\.npy: its header declares more data than the file holds"):
        read_image(tmp_path / "x.npy")


def test_alpha_is_dropped_before_the_channels_are_matched():
    """RGBA and grey + alpha to a 3- and a 1-channel bundle: the picture, not an average with its alpha (an
    RGBA image used to become grey for an RGB bundle, and a batch mixing it with RGB failed to stack)."""
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128
    assert (conform(rgba, 4, 3) == [255, 0, 0]).all()
    assert (conform(rgba, 4, 1) == 85).all() and conform(rgba, 4, 1).shape == (4, 4, 1)
    grey_alpha = np.stack([np.full((4, 4), 200, np.uint8), np.zeros((4, 4), np.uint8)], -1)
    assert (conform(grey_alpha, 4, 3) == 200).all() and conform(grey_alpha, 4, 3).shape == (4, 4, 3)


def _png(w: int, h: int, raw: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + b"\0\0\0\0"

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_png_data_beyond_its_header_is_refused_before_it_is_inflated():
    """A 2x2 grey PNG holds 6 bytes once inflated; 1 GB of zeros compresses to about 1 MB. The reader
    inflates no more than the header declares (it used to inflate everything first)."""
    assert read_png(_png(2, 2, b"\0ab\0cd")).shape == (2, 2, 1)
    bomb = zlib.compressobj(9)
    idat = b"".join(bomb.compress(bytes(1 << 20)) for _ in range(256)) + bomb.flush()  # 256 MB inflated
    png = _png(2, 2, b"").split(b"IDAT")[0][:-4]  # signature and IHDR
    png += struct.pack(">I", len(idat)) + b"IDAT" + idat + b"\0\0\0\0"
    with pytest.raises(ValueError, match="more than its 2x2 header"):
        read_png(png)
    with pytest.raises(ValueError, match="less than"):
        read_png(_png(2, 2, b"\0ab"))
    with pytest.raises(ValueError, match="pixels"):
        read_png(_png(100_000, 100_000, b"\0"))
