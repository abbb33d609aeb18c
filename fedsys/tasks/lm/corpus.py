"""Text sources as named units: the interpreter's standard library, or the user's own text.

A unit is what one client would naturally hold: a top-level standard-library package or module
(like LEAF Shakespeare's split by speaking role, non-IID by construction), a sub-directory of the
user's text, or the ``client`` of a ``.jsonl`` line. Units are listed cheaply; only the ones a
run uses are read.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedsys.errors import DataError

# Not the library itself: the test suite, third-party packages, and test folders in packages.
_SKIPPED_TOP = frozenset({"test", "site-packages", "dist-packages", "__pycache__"})
_SKIPPED_INNER = frozenset({"test", "tests", "idle_test", "__pycache__"})


@dataclass(frozen=True)
class TextUnit:
    """One natural client's text: a name and a way to read its documents."""

    name: str
    size: int  # bytes (for ordering and for the corpus hash)
    read: Callable[[], list[str]]


@dataclass(frozen=True)
class Corpus:
    """Named units and a sha256 that identifies the file list they came from."""

    units: dict[str, TextUnit]
    sha256: str
    description: str


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _read_files(files: tuple[Path, ...]) -> Callable[[], list[str]]:
    def read() -> list[str]:
        return [f.read_text(encoding="utf-8", errors="replace") for f in files]

    return read


def _given(docs: list[str]) -> Callable[[], list[str]]:
    def read() -> list[str]:
        return list(docs)

    return read


def _package_files(package: Path) -> tuple[Path, ...]:
    return tuple(
        sorted(
            f
            for f in package.rglob("*.py")
            if not _SKIPPED_INNER.intersection(f.relative_to(package).parts[:-1])
        )
    )


def _hash_listing(root: Path, files: list[Path]) -> str:
    """sha256 of ``relative path TAB size`` lines: differs between Python patch releases."""
    digest = hashlib.sha256()
    for f in sorted(files):
        digest.update(f"{f.relative_to(root).as_posix()}\t{f.stat().st_size}\n".encode())
    return digest.hexdigest()


def stdlib_corpus(root: Path | None = None) -> Corpus:
    """The running interpreter's standard-library sources, one unit per top-level entry."""
    root = root or stdlib_root()
    if not root.is_dir():
        raise DataError(f"the standard library is not at {root}")
    units: dict[str, TextUnit] = {}
    listed: list[Path] = []
    for entry in sorted(root.iterdir()):
        if entry.name in _SKIPPED_TOP:
            continue
        if entry.is_dir() and (entry / "__init__.py").is_file():
            files = _package_files(entry)
            name = entry.name
        elif entry.is_file() and entry.suffix == ".py":
            files = (entry,)
            name = entry.stem
        else:
            continue
        if not files:
            continue
        listed.extend(files)
        size = sum(f.stat().st_size for f in files)
        units[name] = TextUnit(name, size, _read_files(files))
    if not units:
        raise DataError(f"no Python sources under {root}")
    return Corpus(units, _hash_listing(root, listed), f"stdlib {root}")


def directory_corpus(path: Path) -> Corpus:
    """One unit per sub-directory of ``path``; every regular file in it is one document."""
    if not path.is_dir():
        raise DataError(f"lm.text.path={str(path)!r} is not a directory")
    units: dict[str, TextUnit] = {}
    listed: list[Path] = []
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        files = tuple(sorted(f for f in sub.rglob("*") if f.is_file()))
        if not files:
            continue
        listed.extend(files)
        units[sub.name] = TextUnit(
            sub.name, sum(f.stat().st_size for f in files), _read_files(files)
        )
    if not units:
        raise DataError(
            f"lm.text.path={str(path)!r} has no sub-directory with files (one per client)"
        )
    return Corpus(units, _hash_listing(path, listed), f"directory {path}")


def jsonl_corpus(path: Path) -> Corpus:
    """One unit per distinct ``client`` in a ``.jsonl`` file of ``{"client", "text"}`` lines."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read lm.text.path={str(path)!r}: {exc.strerror}") from None
    texts: dict[str, list[str]] = {}
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise DataError(f'{path}:{number}: needs a string "text" field')
        client = row.get("client")
        if not isinstance(client, str | int) or isinstance(client, bool) or str(client) == "":
            raise DataError(f'{path}:{number}: needs a "client" field (string or integer)')
        texts.setdefault(str(client), []).append(row["text"])
    if not texts:
        raise DataError(f"lm.text.path={str(path)!r} holds no lines")
    units = {
        name: TextUnit(name, sum(len(t) for t in docs), _given(docs))
        for name, docs in sorted(texts.items())
    }
    return Corpus(units, hashlib.sha256(raw).hexdigest(), f"jsonl {path}")
