"""Which folders rkd-edge may create, resume into or replace (``--out`` and ``--force``).

Every folder the toolkit creates carries a small marker file, ``.rkd-edge.json``, naming its kind
(``run``, ``bundle``, ``teacher``, ``evaluation``). ``--force`` replaces a folder only when it is an
artefact of the same kind that the toolkit wrote and holds nothing else: never the command's source, a
parent of it, or a folder with a user's files in it. Folders written before markers existed are
recognised by their structure (a bundle by its manifest, a run by ``config.json`` and ``stages/``; an
evaluation folder always has its marker). A run
may hold evaluations and bundles the toolkit wrote into it (marked, holding nothing else).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rkd_edge.errors import UserError
from rkd_edge.io import (
    COMMIT_LIST,
    FILE_SET_TAG,
    MAX_MARKER_BYTES,
    TOOL_MARKER,
    check_new_files,
    file_in_the_way,
    read_text,
    restore_moved_aside,
    sha256_file,
    special_entry,
    write_json,
)
from rkd_edge.runtime.bundle import (
    FORMAT,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    BundleError,
    bundle_id,
    outside_manifest,
    verify_bundle,
)

MARKER = TOOL_MARKER
KINDS = ("run", "bundle", "teacher", "evaluation")

# Top-level entries each kind of folder may hold (besides the marker): what the toolkit writes there.
RUN_ENTRIES = frozenset(
    {
        "config.json", "system.json", "genotype.json", "stages", "checkpoints", "train", "teacher", "cache",
        "run.log", "report.json", "report.md", "search", "search_log.json", "arch_weights.png", "pareto.csv",
        "pareto.md", "evaluation.csv", "evaluation.json", "evaluation_summary.json", "accuracy_vs_snr.png",
        "accuracy_vs_symbols.png", "prune.json", "prune-job.json", "sweep", "latency_table.json",
    }
)  # fmt: skip
TEACHER_ENTRIES = frozenset({"teacher.pt", "teacher.json", "teacher-job.json", "checkpoint.pt", "history.png"})
EVALUATION_ENTRIES = frozenset(
    {"evaluation.csv", "evaluation.json", "evaluation_summary.json", "accuracy_vs_snr.png", "accuracy_vs_symbols.png"}
)

# Hidden entries rkd-edge makes inside its folders while it writes, each named after the entry it writes:
# an atomic write's temporary (.NAME.XXXXXXXX.tmp), a nested output's staging folder and tag
# (.NAME.XXXXXXXX.partial[.tag]), the copy it moves aside to replace it (.NAME.PID.old) and its lock
# (.NAME.lock, holding a pid); and a file set's staging folder (.staging.XXXXXXXX: the FileSet tag, its commit
# list, and files of the folder's own kinds or their temporaries). Any other hidden name (.git, a user's notes
# or backups) is someone else's.
_RANDOM = r"[a-z0-9_]{8}"
_NAMED_AFTER = re.compile(rf"\.(?P<base>.+)\.({_RANDOM}\.(tmp|partial|partial\.tag)|\d+\.old|lock)")
_STAGING = re.compile(rf"\.staging\.{_RANDOM}")


def _tool_hidden(folder: Path, name: str, allowed: frozenset) -> bool:
    """Whether the hidden entry ``name`` of ``folder`` is one rkd-edge makes while it writes (above)."""
    path = folder / name
    if path.is_symlink():
        return False
    if _STAGING.fullmatch(name):
        return _file_set_staging(path, allowed)
    m = _NAMED_AFTER.fullmatch(name)
    if m is None:
        return False
    base = folder / m["base"]
    # A run's evaluation killed before its folder was made leaves only its lock (evaluate RUN --out RUN/eval).
    pending = name.endswith(".lock") and allowed is RUN_ENTRIES and not base.exists()
    if not (m["base"] in allowed or _nested_artefact(base) or pending):
        return False
    if name.endswith(".lock"):  # a lock holds its holder's pid, or nothing
        return path.is_file() and path.stat().st_size <= 32 and (path.read_bytes().strip() or b"0").isdigit()
    return True


def _file_set_staging(path: Path, allowed: frozenset) -> bool:
    """Whether ``path`` is what a killed :class:`~rkd_edge.io.FileSet` leaves: its tag, maybe its commit
    list, and plain files named as the folder's own entries (or their atomic-write temporaries). The next
    writer of that set finishes or removes it (:func:`rkd_edge.io.finish_file_sets`)."""
    if path.is_symlink() or not path.is_dir():
        return False
    if not (path / FILE_SET_TAG).is_file():  # killed between making the folder and tagging it: empty
        return not any(path.iterdir())
    own = allowed | {MARKER, FILE_SET_TAG, COMMIT_LIST, COMMIT_LIST + ".tmp"}
    for entry in path.iterdir():
        m = _NAMED_AFTER.fullmatch(entry.name)
        temporary = m is not None and entry.name.endswith(".tmp") and m["base"] in own
        if entry.is_symlink() or not entry.is_file() or not (entry.name in own or temporary):
            return False
    return True


# What reading a JSON file someone else may have written can raise (not JSON, not text, an integer of more
# than 4,300 digits: ValueError; not an object; nested beyond the parser's recursion limit): the folder is
# then not the toolkit's.
_UNREADABLE = (ValueError, AttributeError, RecursionError)


def write_marker(folder: Path, kind: str, **fields: str) -> None:
    """Mark ``folder`` as an rkd-edge artefact of ``kind`` (with ``fields``, e.g. what an evaluation is of)."""
    write_json(Path(folder) / MARKER, {"kind": kind, "tool": "rkd-edge", **fields})


def write_manifest(root: Path, manifest: dict) -> dict:
    """Hash the bundle's files under ``root`` into ``manifest['files']``, write it, and mark the folder as a
    bundle of that manifest's id (a manifest edited later no longer matches it).

    Left out, as verification leaves them out: :func:`rkd_edge.runtime.bundle.outside_manifest` (``trt/``'s
    engines are hashed by the manifest's ``tensorrt`` record).
    """
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not outside_manifest(rel.parts[0]):
            files[rel.as_posix()] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest["files"] = files
    write_json(root / MANIFEST, manifest)
    write_marker(root, "bundle", bundle_id=bundle_id(manifest))
    return manifest


def marker_field(folder: Path, key: str) -> str | None:
    """A field of ``folder``'s marker (None: no marker, no such field, or not readable)."""
    try:  # bounded: a 2 GB sparse marker took 4.7 GB of memory before it was called unreadable
        value = json.loads(read_text(Path(folder) / MARKER, "marker", MAX_MARKER_BYTES)).get(key)
    except (UserError, *_UNREADABLE):
        return None
    return value if isinstance(value, str) else None


def _manifest(folder: Path):
    """A bundle's manifest as JSON, read within the bound the runtime holds manifests to (UserError beyond)."""
    return json.loads(read_text(folder / MANIFEST, "manifest", MAX_MANIFEST_BYTES))


def kind_of(folder: Path) -> str | None:
    """The kind of rkd-edge artefact ``folder`` is, or ``None`` if it is not one."""
    folder = Path(folder)
    marker = folder / MARKER
    if marker.is_file():
        kind = marker_field(folder, "kind")
        return kind if kind in KINDS else None
    if (folder / MANIFEST).is_file():
        try:
            return "bundle" if _manifest(folder).get("format") == FORMAT else None
        except (UserError, *_UNREADABLE):
            return None
    if (folder / "config.json").is_file() and (folder / "stages").is_dir():
        return "run"
    if (folder / "teacher.json").is_file() and (folder / "teacher.pt").is_file():
        return "teacher"
    return None  # an evaluation folder is always marked: a folder holding a summary file may be anyone's


def foreign_entries(folder: Path, kind: str) -> list[str]:
    """Entries of ``folder`` that rkd-edge did not write for an artefact of ``kind``."""
    folder = Path(folder)
    names = {p.name for p in folder.iterdir()} - {MARKER}
    if kind == "bundle":
        try:
            listed = set(_manifest(folder).get("files", {}))
        except (UserError, *_UNREADABLE):
            return sorted(names)
        files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        return sorted(f for f in files - listed - {MARKER, MANIFEST} if not _bundle_evaluation_file(folder, f))
    allowed = {"run": RUN_ENTRIES, "teacher": TEACHER_ENTRIES, "evaluation": EVALUATION_ENTRIES}[kind]
    extra = (n for n in names if n not in allowed and not _tool_hidden(folder, n, allowed))
    return sorted(n for n in extra if not (kind == "run" and _nested_artefact(folder / n)))


def _bundle_evaluation_file(bundle: Path, rel: str) -> bool:
    """Whether ``rel`` (a path in a bundle) is a file ``rkd-edge evaluate BUNDLE`` writes (its results, or
    what a killed one leaves: its lock, a staging folder or temporary): only those, so that a user's notes kept
    in ``BUNDLE/evaluation`` stop ``--force`` instead of going with it."""
    parts = rel.split("/")
    if len(parts) == 1:
        return _tool_hidden(bundle, parts[0], frozenset({"evaluation"}))
    if parts[0] != "evaluation" or len(parts) > 3:
        return False
    name, folder = parts[1], bundle / "evaluation"
    allowed = EVALUATION_ENTRIES | {MARKER}
    return len(parts) == 2 and name in allowed or _tool_hidden(folder, name, allowed)


def evaluation_leftovers(path: Path) -> bool:
    """Whether ``path`` holds only what an evaluation killed before its marker was written leaves there (its
    staging folder, temporaries, lock): still free for the next evaluation, and the toolkit's."""
    leftovers = EVALUATION_ENTRIES | {MARKER}
    return (
        path.is_dir() and not path.is_symlink() and all(_tool_hidden(path, p.name, leftovers) for p in path.iterdir())
    )


def _nested_artefact(path: Path) -> bool:
    """Whether ``path`` is an evaluation or bundle that rkd-edge wrote inside a run (``evaluate RUN`` into
    RUN/evaluation, ``export RUN --out RUN/bundle``) holding nothing else, or what a killed evaluation left
    there: the run stays the toolkit's."""
    if path.is_symlink() or not path.is_dir():
        return False
    if not (path / MARKER).is_file():
        return evaluation_leftovers(path)
    kind = kind_of(path)
    return kind in ("evaluation", "bundle") and not foreign_entries(path, kind)


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_output(
    out: Path,
    kind: str,
    force: bool | None,
    sources: tuple[Path, ...] = (),
    action: str = "--force replaces",
) -> bool:
    """Decide whether a command may write a new ``kind`` artefact at ``out``.

    Args:
        out: The ``--out`` path.
        kind: What the command writes there.
        force: Whether ``--force`` was given; ``None`` for a command that has no ``--force`` (the message
            then does not offer it).
        sources: What the command reads (never replaced, nor any folder that holds them).
        action: What the command does to an existing artefact, for the message.

    Returns:
        True when an existing artefact at ``out`` is to be replaced, False when ``out`` is free (missing
        or an empty folder).

    Raises:
        UserError: One line naming the path and why it may not be written.
    """
    out = Path(out)
    if (blocker := file_in_the_way([out, *out.parents])) is not None:
        raise UserError(f"{blocker} is a file, not a folder; choose another --out")
    restore_moved_aside(out)  # a replace killed between its two renames: the old artefact is back first
    for src in sources:  # an evaluation may live in what it evaluates (RUN/eval); a new run or bundle may not
        if kind != "evaluation" and out.resolve() != Path(src).resolve() and _inside(out, Path(src)):
            raise UserError(f"--out {out} lies inside the source {src}; choose a folder outside it")
    for parent in out.resolve().parents:  # resolved: in a/../b, b does not lie inside a
        found = kind_of(parent) if parent.is_dir() else None
        if found == "bundle":
            raise UserError(f"--out {out} lies inside the bundle {parent}, which holds only what its manifest lists")
        if found == "run" and kind == "teacher":
            raise UserError(f"--out {out} lies inside the run {parent}, whose stages were trained with its own teacher")
        # A run holds its own evaluations only (a bundle of it goes beside it: inside, it would be copied by
        # prune and deleted with the run); a run or bundle inside it would make it no longer resumable.
        if found == "run" and kind in ("run", "bundle"):
            raise UserError(f"--out {out} lies inside the run {parent}, which holds only its own evaluations")
    if not out.exists() and not out.is_symlink():
        return False
    if out.is_symlink():
        raise UserError(f"{out} is a symbolic link; give the real folder as --out")
    if not any(out.iterdir()):
        return False
    if kind == "evaluation" and evaluation_leftovers(out):  # an evaluation killed before its marker: free
        return False
    for src in sources:
        if _inside(Path(src), out):
            raise UserError(f"--out {out} holds the source {src}; it is never replaced: choose another --out")
    if force is None:
        raise UserError(f"{out} already exists and is not empty; choose a new --out")
    if not force:
        raise UserError(f"{out} already exists; choose another --out, or pass --force to replace a {kind} there")
    found = kind_of(out)
    if found != kind:
        what = f"an rkd-edge {found}" if found else "not an rkd-edge artefact"
        raise UserError(f"{action} only an rkd-edge {kind}, and {out} is {what}; choose another --out")
    if kind == "bundle":  # the manifest alone proves nothing: every file it lists must still be as exported
        try:
            verify_bundle(out)
        except BundleError as exc:
            raise UserError(
                f"{out} no longer verifies as the bundle rkd-edge wrote ({str(exc).split(';')[0]}); refusing to "
                "replace it, choose another --out"
            ) from None
    extra = foreign_entries(out, kind)
    if extra:
        verb = "resume into" if action == RESUMES else "replace"
        raise UserError(
            f"{out} holds files rkd-edge did not write ({', '.join(extra[:3])}); refusing to {verb} it: move them "
            "out, or choose another --out"
        )
    # rkd-edge writes neither links nor special files: one inside would lead a resumed run's writes (or a
    # reader) out of the folder, into someone else's files.
    if (odd := special_entry(out)) is not None:
        raise UserError(
            f"{odd} is a symbolic link or a special file, which rkd-edge never writes; remove it or choose another "
            "--out"
        )
    return True


RESUMES = "rkd-edge resumes"  # check_output's action for a folder written in place


def check_resumable(out: Path, kind: str = "run") -> bool:
    """Whether ``out`` may be created or resumed as a ``kind`` folder written in place (a training run).

    Returns:
        True when ``out`` already is such a folder (resume), False when it is free.

    Raises:
        UserError: ``out`` is a file, or a folder holding anything else.
    """
    return check_output(Path(out), kind, force=True, action=RESUMES)


def refuse_inside_bundle(path: str | Path, option: str) -> None:
    """Refuse an output file inside a bundle: a bundle holds only what its manifest lists, so one more file
    (a bench JSON, an estimate) would make it fail its own verification."""
    for parent in Path(path).resolve().parents:
        if parent.is_dir() and kind_of(parent) == "bundle":
            raise UserError(
                f"{option} {path} lies inside the bundle {parent}, which holds only what its manifest lists; "
                "write it elsewhere"
            )


def check_new_outputs(named: dict[str, str | Path | None]) -> None:
    """:func:`rkd_edge.io.check_new_files`, and none of the files inside a bundle."""
    check_new_files(named)
    for option, path in named.items():
        if path is not None:
            refuse_inside_bundle(path, option)
