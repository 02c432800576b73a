"""Experiment storage: a local folder or a URI (``s3://``, ``gs://``, ``file://``).

Ray Tune writes experiments through pyarrow's file systems, and so does this module, so the
search's own record and the local copy for the results tables work wherever Ray's storage works.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.fs

from trainable.atomic import write_atomic
from trainable.atomic import write_text as write_local_text


def write_local_bytes(path: Path, data: bytes) -> None:
    write_atomic(path, lambda file: file.write(data))


_URI = re.compile(r"^[a-z][a-z0-9+.-]*://")


def is_uri(location: str) -> bool:
    return bool(_URI.match(location))


def join(location: str, *parts: str) -> str:
    return "/".join([location.rstrip("/"), *parts])


def exists(location: str) -> bool:
    if not is_uri(location):
        return Path(location).exists()
    filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
    return filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def read_text(location: str) -> str:
    if not is_uri(location):
        return Path(location).read_text()
    filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
    with filesystem.open_input_stream(path) as stream:
        return stream.read().decode()


def write_text(location: str, text: str) -> None:
    """Write a small text file: atomically on a local disk, as one object in a bucket."""
    if not is_uri(location):
        write_local_text(location, text)
        return
    filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(text.encode())


# The files of an experiment that the results tables read; checkpoints are left in the storage.
RESULT_FILES = {"search.json", "params.json", "result.json", "progress.csv", "error.txt"}


def copy_results_to_local(location: str, folder: Path) -> Path:
    """Copy an experiment's result files (not its checkpoints) from a URI into ``folder``."""
    filesystem, root = pyarrow.fs.FileSystem.from_uri(location)
    selector = pyarrow.fs.FileSelector(root, recursive=True)
    for info in filesystem.get_file_info(selector):
        if info.type != pyarrow.fs.FileType.File or info.base_name not in RESULT_FILES:
            continue
        relative = info.path[len(root) :].lstrip("/")
        if "/" in relative and relative.split("/")[1].startswith("checkpoint_"):
            continue
        with filesystem.open_input_stream(info.path) as stream:
            write_local_bytes(folder / relative, stream.read())
    return folder
