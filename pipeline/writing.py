"""Files written whole or not at all, and one error line when a folder cannot be written."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.config import ConfigError

ELSEWHERE = "set runs_dir=<folder> to write elsewhere"


@contextlib.contextmanager
def writing(target: Path, hint: str) -> Iterator[None]:
    """An ``OSError`` while writing ``target`` (a file or a folder) becomes one error line: what
    could not be written, why, and ``hint``, what to change."""
    try:
        yield
    except OSError as e:
        raise ConfigError(f"cannot write {target}: {_why(e)}; {hint}") from None


def _why(e: OSError) -> str:
    name = Path(e.filename2 or e.filename or "")
    if isinstance(e, IsADirectoryError):
        return f"{name} is a folder"
    if isinstance(e, NotADirectoryError | FileExistsError):
        # the part of the path that is a file where a folder is needed
        blocker = next((p for p in (name, *name.parents) if p.exists() and not p.is_dir()), name)
        return f"{blocker} is a file, not a folder"
    return e.strerror or str(e)


@contextlib.contextmanager
def staged(folder: Path, hint: str) -> Iterator[Path]:
    """A fresh folder inside ``folder`` to write a command's files into; when the block ends
    well each file replaces its namesake in ``folder`` with one rename, otherwise (an error,
    Ctrl-C) they are deleted: no file is left half-written."""
    with writing(folder, hint):
        folder.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".writing-", dir=folder))
        try:
            yield stage
            for path in sorted(stage.iterdir()):
                path.replace(folder / path.name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def write_text(path: Path, text: str) -> Path:
    """``text`` into ``path`` through a temporary name and one rename: never a half-written
    file, and the temporary gone whatever happens (an error, Ctrl-C)."""
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        tmp.write_text(text, "utf-8")
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
