"""IDX files (the MNIST format: a big-endian header of magic number and dimensions, then uint8 items),
read with bounded memory: a crafted or truncated file is a one-line `TrilemmaError` naming it, never a huge
allocation. `trilemma.data` reads Fashion-MNIST through `read_idx`."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import TrilemmaError

IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049
# At most this many items per IDX file (Fashion-MNIST has 60,000): the header is checked against it before
# any payload is read. A million 28x28 images are 784 MB as uint8 and 3.1 GB once converted to float32.
IDX_MAX_ITEMS = 1_000_000
GZIP_MAX_RATIO = 1032  # deflate's largest expansion (258 bytes per 2-bit match); bounds what a .gz can hold

# Parsed IDX arrays keyed by (path, mtime_ns, size): repeated loads in one process skip gunzip and parsing.
_IDX_CACHE: dict[tuple[str, int, int], np.ndarray] = {}


def read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """Parse one IDX file (uint8 payload) into (n, *item_shape); cached by (path, mtime, size).

    The header is read first from a streaming reader (gzip or plain) and checked (magic, per-item shape,
    item count at most IDX_MAX_ITEMS, a payload the file can hold); then exactly the declared payload is
    read, in chunks, so a crafted file costs no more memory than the data it really holds.
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key in _IDX_CACHE:
        return _IDX_CACHE[key]
    gz = path.suffix == ".gz"
    try:
        f = open(path, "rb")
    except OSError as e:
        raise TrilemmaError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    with f:
        try:
            if gz:
                if f.read(2) != b"\x1f\x8b":
                    raise TrilemmaError(f"{path}: not a gzip file")
                f.seek(0)
                with gzip.GzipFile(fileobj=f, mode="rb") as stream:
                    arr = _parse_idx(stream, path, st.st_size, magic, item_shape, gz)
            else:
                arr = _parse_idx(f, path, st.st_size, magic, item_shape, gz)
        except (OSError, EOFError, zlib.error) as e:  # OSError includes gzip.BadGzipFile
            if gz:
                raise TrilemmaError(f"{path}: corrupt or truncated gzip data") from None
            raise TrilemmaError(f"{path}: cannot read ({getattr(e, 'strerror', None) or type(e).__name__})") from None
    _IDX_CACHE[key] = arr
    return arr


def _read_upto(stream, n: int) -> bytearray:
    """At most n bytes from `stream`, fewer only at its end. Read in chunks into a growing buffer, so a
    stream shorter than declared never makes us allocate (or hold twice) the declared size."""
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(min(n - len(buf), 1 << 24))
        if not chunk:
            break
        buf += chunk
    return buf


def _parse_idx(stream, path: Path, file_size: int, magic: int, item_shape: tuple[int, ...], gz: bool) -> np.ndarray:
    """Check the header read from `stream`, then read exactly the payload it declares (see `read_idx`)."""
    ndim = 1 + len(item_shape)
    header = 4 * (1 + ndim)
    head = _read_upto(stream, header)
    if len(head) < header:
        raise TrilemmaError(f"{path}: truncated IDX header ({len(head)} bytes)")
    found = struct.unpack(">I", head[:4])[0]
    if found != magic:
        raise TrilemmaError(f"{path}: wrong IDX magic number {found} (expected {magic})")
    dims = struct.unpack(f">{ndim}I", head[4:header])
    if dims[1:] != item_shape:
        shape = "x".join(map(str, item_shape))
        raise TrilemmaError(f"{path}: IDX items of shape {dims[1:]}, expected {shape} (Fashion-MNIST)")
    if dims[0] > IDX_MAX_ITEMS:
        raise TrilemmaError(f"{path}: IDX header declares {dims[0]} items, more than the {IDX_MAX_ITEMS:,} accepted")
    expected = math.prod(dims)
    # a plain file holds at most its size; deflate expands a byte into at most GZIP_MAX_RATIO bytes
    capacity = file_size - header if not gz else GZIP_MAX_RATIO * file_size
    if expected > capacity:
        raise TrilemmaError(f"{path}: truncated data (a {file_size}-byte file cannot hold the {expected} payload bytes "
                            f"declared for shape {dims})")
    raw = _read_upto(stream, expected)
    if len(raw) < expected:
        raise TrilemmaError(f"{path}: truncated data ({len(raw)} of {expected} payload bytes for shape {dims})")
    if stream.read(1):
        raise TrilemmaError(f"{path}: unexpected trailing bytes after the {expected} payload bytes of shape {dims}")
    # a writable buffer lets torch.from_numpy share it without a warning (the cache itself is never written)
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)
