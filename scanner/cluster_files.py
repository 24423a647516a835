"""The files a scan reads, as bytes that travel to a Dask worker with no shared filesystem.

A worker of ``--scheduler`` (scanner/cluster.py) may run on another machine: it receives the
model file (and any external tensor data it names) and the clean data (the ``.npz``, or every
image of the class sub-folders) as bytes, writes them under a temporary folder of its own and
runs the same ``prepare`` as a local scan on them. The copy keeps the relative layout, so the
folder's per-file hashes in the report's audit trail are the ones of the original.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .data import IMAGE_SUFFIXES
from .errors import DataError, ModelError


@dataclass(frozen=True, eq=False)
class ScanFiles:
    """``files``: relative POSIX path -> content; ``folders``: relative folders to create even
    when empty (the class sub-folders); ``entry``: the relative path a scan is given (the model
    file, the data folder or the ``.npz``); ``origin``: the path on the driver."""

    origin: str
    entry: str
    files: dict[str, bytes]
    folders: tuple[str, ...] = ()

    @property
    def size_bytes(self) -> int:
        return sum(len(content) for content in self.files.values())

    def materialize(self, directory: str | os.PathLike) -> Path:
        """Write the files under ``directory`` (created) and return the path of ``entry`` there."""
        root = Path(directory)
        for name in (*self.folders, *self.files):
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts:
                raise ModelError(f"refusing to write {name!r} outside the worker's scan folder")
            target = root.joinpath(*relative.parts)
            if name in self.files:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.files[name])
            else:
                target.mkdir(parents=True, exist_ok=True)
        return root.joinpath(*PurePosixPath(self.entry).parts)


def model_files(path: str | os.PathLike) -> ScanFiles:
    """The ONNX file and the external tensor data files it names (relative to its folder; the
    worker's ``load_model`` checks them as a local scan does)."""
    import onnx
    from onnx import external_data_helper

    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read the model file {path}: {exc.strerror or exc}") from exc
    try:
        proto = onnx.load_from_string(content)
    except Exception:       # not ONNX: the worker's load_model says so, as a local scan would
        proto = None
    files = {path.name: content}
    if proto is not None:
        for tensor in external_data_helper._get_all_tensors(proto):
            if not external_data_helper.uses_external_data(tensor):
                continue
            location = {e.key: e.value for e in tensor.external_data}.get("location", "")
            relative = PurePosixPath(location.replace("\\", "/"))
            source = path.parent.joinpath(*relative.parts)
            if relative.is_absolute() or ".." in relative.parts or not source.is_file():
                continue            # the worker's load_model refuses it with the local scan's message
            files.setdefault(str(relative), source.read_bytes())
    return ScanFiles(str(path), path.name, files)


def data_files(path: str | os.PathLike) -> ScanFiles:
    """The clean data: an ``.npz`` file, or the PNG/JPEG files of a folder's class sub-folders."""
    path = Path(path)
    if path.is_dir():
        files, folders = {}, [path.name]
        for class_dir in sorted(d for d in path.iterdir() if d.is_dir()):
            folders.append(f"{path.name}/{class_dir.name}")
            for file in sorted(class_dir.iterdir()):
                if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                    files[f"{path.name}/{class_dir.name}/{file.name}"] = file.read_bytes()
        return ScanFiles(str(path), path.name, files, tuple(folders))
    if not path.is_file():
        raise DataError(f"clean data not found: {path} (a folder of class sub-folders, or an .npz)")
    return ScanFiles(str(path), path.name, {path.name: path.read_bytes()})
