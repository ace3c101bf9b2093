"""Bundle manifests: format, hashes, and verification (numpy-free, torch-free)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT = "rkd-edge/bundle@1"


class BundleError(Exception):
    """A bundle that cannot be trusted: missing, tampered or truncated files, or a bad manifest.

    It is a user error: the CLI prints it as one line with exit code 2.
    """

    exit_code = 2


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def load_manifest(root: str | Path) -> dict:
    """Read and sanity-check ``manifest.json`` (no hash check)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise BundleError(f"no {MANIFEST} in {root}; export a bundle with rkd-edge export RUN --out DIR")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BundleError(f"{path} is not valid JSON; re-export the bundle") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT}; re-export it")
    return manifest


# Manifest keys that a device may rewrite after export (the measured precision selection per device
# fingerprint): they do not change what the bundle computes, so they are left out of its id.
DEVICE_LOCAL_KEYS = ("selection",)


def bundle_id(manifest: dict) -> str:
    """16 hex digits identifying a manifest's content (key-sorted compact JSON, sha256), leaving out
    :data:`DEVICE_LOCAL_KEYS` so that a bench selection on one device keeps the bundle's id."""
    content = {k: v for k, v in manifest.items() if k not in DEVICE_LOCAL_KEYS}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def verify_bundle(root: str | Path, manifest: dict | None = None) -> dict:
    """Check every listed file's size and sha256; refuse the bundle on any mismatch."""
    root = Path(root)
    manifest = manifest or load_manifest(root)
    for rel, rec in manifest.get("files", {}).items():
        path = root / rel
        if not path.is_file():
            raise BundleError(f"bundle file missing: {rel}; re-export the bundle")
        if path.stat().st_size != rec["bytes"]:
            raise BundleError(
                f"bundle file {rel} has {path.stat().st_size} bytes, the manifest says "
                f"{rec['bytes']} (truncated or replaced); re-export the bundle"
            )
        if _sha256(path) != rec["sha256"]:
            raise BundleError(
                f"bundle file {rel} does not match its sha256 in the manifest (tampered or "
                "corrupt); re-export the bundle"
            )
    return manifest


@dataclass
class Bundle:
    """A verified bundle directory and its manifest."""

    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: str | Path, verify: bool = True) -> Bundle:
        root = Path(root)
        manifest = load_manifest(root)
        if verify:
            verify_bundle(root, manifest)
        return cls(root, manifest)

    @property
    def bundle_id(self) -> str:
        """The bundle's identity: the first 16 hex digits of the sha256 of its manifest's content.

        The manifest lists every file's sha256, so the id changes whenever any model or file does.
        """
        return bundle_id(self.manifest)

    def model_path(self, name: str, precision: str = "fp32") -> Path:
        models = self.manifest["models"].get(name, {})
        if precision not in models:
            raise BundleError(
                f"bundle has no {precision} {name} model (has {sorted(models) or 'none'}); export with --int8 for INT8"
            )
        return self.root / models[precision]["file"]
