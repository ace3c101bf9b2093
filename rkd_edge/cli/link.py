"""Link commands: ``tx`` (encode and send channel symbols) and ``rx`` (receive, decode, classify)."""

from __future__ import annotations

from pathlib import Path

import typer

BUNDLE = typer.Argument(..., help="An exported bundle folder (verified against its manifest).")
TCP = typer.Option(False, "--tcp/--udp", help="Transport: UDP (default, fragmented to --mtu) or TCP.")
PRECISION = typer.Option(None, "--precision", help="fp32 or int8 models (default: the bundle's default).")
THREADS = typer.Option(1, "--threads", help="ONNX Runtime intra-op threads (0: ONNX Runtime's choice).")
SUMMARY = typer.Option(None, "--summary", help="Also write the exit summary to this JSON file.")
KEY = typer.Option(
    None,
    "--key",
    help="Pre-shared key file (16+ bytes, chmod 600; the same on tx and rx): frames carry an HMAC tag and rx "
    "drops frames without a valid one.",
)


def tx(
    bundle: Path = BUNDLE,
    source: list[str] = typer.Argument(
        None, help="Image files, a folder, split:test (the bundle's data, with labels) or - (raw uint8 frames)."
    ),
    to: str = typer.Option(..., "--to", help="Receiver HOST:PORT."),
    tcp: bool = TCP,
    snr_db: float = typer.Option(..., "--snr-db", help="SNR the codec is conditioned on, dB (Es/N0)."),
    symbols: int = typer.Option(None, "--symbols", "-k", help="Complex symbols per image (default: the bundle's K)."),
    count: int = typer.Option(None, "--count", "-n", help="Stop after N frames."),
    repeat: bool = typer.Option(False, "--repeat", help="Cycle the source (e.g. up to --count)."),
    dtype: str = typer.Option("float16", "--dtype", help="Payload: float16, or int8 with one scale per frame."),
    channel: str = typer.Option("awgn", "--channel", help="Channel type the codec is conditioned on."),
    precision: str = PRECISION,
    threads: int = THREADS,
    batch: int = typer.Option(1, "--batch", help="Images per model call (still one image per frame)."),
    rate: float = typer.Option(0.0, "--rate", help="At most this many frames per second (0: no limit)."),
    mtu: int = typer.Option(1400, "--mtu", help="Largest UDP datagram in bytes; frames are fragmented to fit."),
    send_timeout: float = typer.Option(
        10.0, "--send-timeout", help="TCP: give up when the receiver takes no byte for this many seconds."
    ),
    summary: Path = SUMMARY,
    key: Path = KEY,
):
    """Encode images with the bundle's encoder and tx models and send the symbols (PyTorch only for split:NAME)."""
    from rkd_edge.link.tx import run_tx

    run_tx(
        bundle, to, source or [], snr_db, symbols, tcp, count, dtype, channel, precision, threads, batch, rate,
        repeat, mtu, summary, send_timeout, key,
    )  # fmt: skip


def rx(
    bundle: Path = BUNDLE,
    listen: str = typer.Option(..., "--listen", help="HOST:PORT to listen on (port 0: any free port)."),
    tcp: bool = TCP,
    channel: str = typer.Option(None, "--channel", help="Simulate a channel: awgn, rayleigh, rician or identity."),
    snr_db: float = typer.Option(None, "--snr-db", help="The simulated channel's SNR, dB (Es/N0)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulated channel's noise."),
    count: int = typer.Option(None, "--count", "-n", help="Stop after N decoded frames."),
    out: Path = typer.Option(None, "--out", "-o", help="JSON-lines file (default: stdout)."),
    precision: str = PRECISION,
    threads: int = THREADS,
    batch: int = typer.Option(64, "--batch", help="Frames decoded per model call at most."),
    idle_timeout: float = typer.Option(
        None,
        "--idle-timeout",
        help="Stop after this many seconds without a frame it could take (garbage does not count).",
    ),
    reassembly_timeout: float = typer.Option(1.0, "--reassembly-timeout", help="Seconds to wait for UDP fragments."),
    max_age_ms: float = typer.Option(None, "--max-age-ms", help="Drop frames older than this (synchronised clocks)."),
    summary: Path = SUMMARY,
    key: Path = KEY,
):
    """Receive frames, optionally through a simulated channel, decode and classify (no PyTorch needed)."""
    from rkd_edge.link.rx import run_rx

    run_rx(
        bundle, listen, tcp, channel, snr_db, seed, count, out, precision, threads, batch, idle_timeout,
        reassembly_timeout, max_age_ms, summary, key,
    )  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("tx")(tx)
    app.command("rx")(rx)
