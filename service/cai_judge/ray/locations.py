"""Where `label --ray` reads pairs and writes labels: a local path or a URI.

A URI (`s3://bucket/pairs.jsonl`, `gs://`, `abfs://`, `hdfs://`, `file://`) resolves first with
pyarrow's own filesystems, which is what Ray Data does with a bare URI, so the driver writes
where the actors could read; any other scheme goes to fsspec (`az://`, `hf://`, `http://`,
... when its fsspec package is installed), wrapped so that Ray Data and the sink use it as a
pyarrow filesystem. Credentials are each filesystem's own: the environment, config files or
instance metadata as pyarrow or fsspec read them; nothing here takes any.

Kept apart from `run.py` and free of module-level imports beyond the standard library: the
plain CLI asks `is_uri` to refuse a URI without importing pyarrow or Ray.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow.fs as pafs

# RFC 3986's scheme, then `://`: `C:\pairs.jsonl` and `pairs:v2.jsonl` stay paths.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class LocationError(ValueError):
    """A path or URI that cannot be read from or written to; the message names it."""


def is_uri(location: str) -> bool:
    """A URI (`s3://...`, `file://...`), not a local path."""
    return _URI.match(location) is not None


def _first_line(error: BaseException) -> str:
    # pyarrow's HDFS error lists every libjvm path it tried, one per line.
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def resolve_location(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path within it of a local path or a URI."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    if not is_uri(location):
        return pafs.LocalFileSystem(), str(Path(location).absolute())
    try:
        filesystem, path = pafs.FileSystem.from_uri(location)
        return filesystem, str(path)
    except pa.ArrowInvalid as error:
        # An unknown scheme: fsspec may know it.
        unknown_to_pyarrow = _first_line(error)
    except OSError as error:
        # A known scheme whose filesystem cannot start here (HDFS without a JVM, S3 without
        # a reachable region endpoint).
        raise LocationError(f"cannot open {location}: {_first_line(error)}") from None
    try:
        from fsspec.core import url_to_fs

        filesystem, path = url_to_fs(location)
    except (ImportError, ValueError) as error:
        raise LocationError(
            f"cannot open {location}: pyarrow does not read it ({unknown_to_pyarrow}) and "
            f"neither does fsspec ({_first_line(error)})"
        ) from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), path


def _file_info(filesystem: pafs.FileSystem, path: str, location: str) -> pafs.FileInfo:
    try:
        return filesystem.get_file_info(path)
    except OSError as error:
        # No credentials, no network, no permission: said now, before any engine starts.
        raise LocationError(f"cannot read {location}: {_first_line(error)}") from None


def check_source(location: str) -> None:
    """Refuse a pairs file that is not there, or is a directory (rows are numbered within
    one file, so a reported row points at one line)."""
    import pyarrow.fs as pafs

    filesystem, path = resolve_location(location)
    info = _file_info(filesystem, path, location)
    if info.type == pafs.FileType.NotFound:
        raise LocationError(f"{location} does not exist")
    if info.type == pafs.FileType.Directory:
        raise LocationError(f"{location} is a directory; give one pairs file")


def check_output_is_new(location: str) -> None:
    """Refuse an output that already holds labels: --ray does not resume a file, and would
    otherwise overwrite it."""
    import pyarrow.fs as pafs

    filesystem, path = resolve_location(location)
    info = _file_info(filesystem, path, location)
    if info.type == pafs.FileType.Directory:
        raise LocationError(f"{location} is a directory; give the labels file's path")
    # A filesystem that reports no size is taken to hold something: refusing costs a rename,
    # overwriting costs the labels.
    if info.type == pafs.FileType.File and (info.size is None or info.size > 0):
        raise LocationError(
            f"{location} already holds labels and --ray does not resume a file: write to "
            "another output file (-o), or resume it without --ray"
        )
