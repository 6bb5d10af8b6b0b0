"""SVHN (Netzer et al., 2011), format 2: cropped 32x32 digits.

Reads train_32x32.mat, test_32x32.mat and extra_32x32.mat: MATLAB v5 files (zlib-compressed
variables or not) holding X, uint8 [32, 32, 3, N] (row, column, channel, image), and y, [N, 1]
with the digit of each image, 10 standing for 0.
Writes svhn-train (73,257 images), svhn-test (26,032), svhn-extra (531,131), with digit d as
label d, and svhn_class_mappings.json ("0".."9").

The files are streamed by a hand-written MATLAB v5 reader (extra_32x32.mat alone is 1.6 GB of
pixels), every read bounded by MAT_READ_LIMIT.
"""
import contextlib
import dataclasses
import os
import struct
import zlib

import numpy as np

from libml import data
from libml.sources import archives, download, output

_MAT_TYPES = {1: 'i1', 2: 'u1', 3: 'i2', 4: 'u2', 5: 'i4', 6: 'u4', 7: 'f4', 9: 'f8', 12: 'i8',
              13: 'u8'}
_MI_MATRIX, _MI_COMPRESSED = 14, 15


# The published files hold 73,257 (train), 26,032 (test) and 531,131 (extra) images. Reads are
# bounded so a damaged or hostile file (a header declaring a huge element, or a compressed
# element that inflates to gigabytes) is refused before it fills memory: the largest read is one
# chunk of X (CHUNK images) or all of y (at most 4.8 MB, as float64).
SVHN_MAX_IMAGES = 600_000
MAT_READ_LIMIT = 64 << 20


def _check_read(n):
    if n > MAT_READ_LIMIT:
        raise ValueError(f'an element of {n:,} bytes, more than the published files hold '
                         f'({MAT_READ_LIMIT:,} at most)')


class _RawStream:
    """Exact reads from a file."""

    def __init__(self, f):
        self.f = f

    def read(self, n):
        _check_read(n)
        out = self.f.read(n)
        if len(out) != n:
            raise EOFError('the file ends early')
        return out


class _ZlibStream:
    """Exact reads from a zlib-compressed element of `nbytes`, decompressing only what is read
    (never more: a small compressed block may inflate a thousandfold)."""

    def __init__(self, f, nbytes):
        self.f, self.left = f, nbytes
        self.z = zlib.decompressobj()
        self.buf = bytearray()

    def read(self, n):
        _check_read(n)
        while len(self.buf) < n:
            if self.z.unconsumed_tail:
                block = self.z.unconsumed_tail
            elif self.left:
                block = self.f.read(min(self.left, 1 << 16))
                if not block:
                    raise EOFError('the file ends early')
                self.left -= len(block)
            else:
                tail = self.z.flush()
                if not tail:
                    raise EOFError('a compressed variable ends early')
                self.buf += tail
                continue
            self.buf += self.z.decompress(block, n - len(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


@dataclasses.dataclass
class MatVariable:
    """A numeric MATLAB array whose data `stream` is positioned at its first value."""
    name: str
    dims: tuple  # MATLAB order: the first dimension varies fastest
    dtype: np.dtype
    nbytes: int
    stream: object
    inline: bytes = None  # the data of a small element (4 bytes or less)

    def read(self, count):
        """The next `count` values, as a flat array in file (column-major) order."""
        size = count * self.dtype.itemsize
        raw = self.inline[:size] if self.inline is not None else self.stream.read(size)
        return np.frombuffer(raw, self.dtype)

    @property
    def size(self):
        return int(np.prod(self.dims))


def _mat_tag(stream, e):
    """(type, nbytes, inline data or None) of a data element; small elements hold 4 bytes inline."""
    raw = stream.read(8)
    word, = struct.unpack(e + 'I', raw[:4])
    if word >> 16:
        return word & 0xFFFF, word >> 16, raw[4:4 + (word >> 16)]
    mtype, nbytes = struct.unpack(e + 'II', raw)
    return mtype, nbytes, None


def _mat_element(stream, e):
    mtype, nbytes, inline = _mat_tag(stream, e)
    if inline is not None:
        return inline
    out = stream.read(nbytes)
    stream.read(-nbytes % 8)  # elements are padded to 8 bytes
    return out


def _mat_variable(stream, e):
    """Parses a miMATRIX header (flags, dimensions, name) up to its real data."""
    mtype, _, _ = _mat_tag(stream, e)
    if mtype != _MI_MATRIX:
        raise ValueError(f'unexpected MATLAB element type {mtype}')
    flag_word = struct.unpack(e + 'II', _mat_element(stream, e))[0]
    raw_dims = _mat_element(stream, e)
    dims = tuple(struct.unpack(f'{e}{len(raw_dims) // 4}i', raw_dims))
    name = _mat_element(stream, e).decode('latin1')
    if not 6 <= (flag_word & 0xFF) <= 15 or flag_word & 0x800:
        return MatVariable(name, dims, None, 0, stream)  # not a real numeric array: not ours
    dtype, nbytes, inline = _mat_tag(stream, e)
    if dtype not in _MAT_TYPES:
        raise ValueError(f'variable {name} has unknown MATLAB data type {dtype}')
    return MatVariable(name, dims, np.dtype(e + _MAT_TYPES[dtype]), nbytes, stream, inline)


@contextlib.contextmanager
def open_mat(path):
    """Yields {name: opener}: opener() returns that variable's MatVariable, ready to stream.

    Reads only the headers: variables are found by skipping over each one's bytes.
    """
    with open(path, 'rb') as f:
        header = f.read(128)
        if len(header) < 128 or not header.startswith(b'MATLAB 5.0 MAT-file'):
            raise ValueError('not a MATLAB 5 .mat file')
        e = {b'IM': '<', b'MI': '>'}.get(header[126:128])
        if e is None:
            raise ValueError('unknown byte order')
        end = f.seek(0, os.SEEK_END)
        offsets, offset = {}, 128
        while offset + 8 <= end:
            offsets[_open_mat_at(f, offset, e).name] = offset
            f.seek(offset)
            offset += 8 + struct.unpack(e + 'II', f.read(8))[1]
        yield {name: (lambda at=at: _open_mat_at(f, at, e)) for name, at in offsets.items()}


def _open_mat_at(f, offset, e):
    f.seek(offset)
    mtype, nbytes = struct.unpack(e + 'II', f.read(8))
    if mtype == _MI_COMPRESSED:
        return _mat_variable(_ZlibStream(f, nbytes), e)
    f.seek(offset)
    return _mat_variable(_RawStream(f), e)


def svhn_chunks(path):
    """Streams (images [n, 32, 32, 3], labels [n]) from an SVHN .mat file; digit 0 is label 0.

    `X` is 32x32x3xN in MATLAB's column-major order, so each image is 3072 contiguous values:
    its red, green and blue planes, each stored column by column. `y` holds 1..10, 10 meaning 0.
    """
    with archives.archive_errors(path), open_mat(path) as variables:
        missing = {'X', 'y'} - set(variables)
        if missing:
            raise ValueError(f'no variable {", ".join(sorted(missing))}')
        y = variables['y']()
        if y.size > SVHN_MAX_IMAGES:
            raise ValueError(f'y declares {y.size:,} images, the published files at most 531,131')
        labels = y.read(y.size).astype(np.int64)
        x = variables['X']()
        if x.dtype is None or x.dims != (32, 32, 3, len(labels)):
            raise ValueError(f'X is {x.dims}, expected (32, 32, 3, {len(labels)})')
        if len(labels) and not 1 <= labels.min() <= labels.max() <= 10:
            raise ValueError('y holds values outside 1..10')
        labels %= 10
        for start in range(0, len(labels), output.CHUNK):
            n = min(output.CHUNK, len(labels) - start)
            values = x.read(n * 3072).reshape(n, 3, 32, 32)
            yield values.transpose(0, 3, 2, 1).astype(np.uint8), labels[start:start + n]


def svhn_count(path):
    with archives.archive_errors(path), open_mat(path) as variables:
        return variables['y']().size


def create_svhn(root, archive_dir):
    names = [str(d) for d in range(10)]
    # All three archives first: a failed download then stops the run before anything is written.
    paths = {part: download.archive(f'{part}_32x32.mat', archive_dir)
             for part in ('train', 'test', 'extra')}
    lines = []
    for part, path in paths.items():
        out = data.record_path('svhn', part, root)
        count = output.write_records(out, svhn_chunks(path), (32, 32, 3), names,
                                     svhn_count(path))
        lines.append(output.records_line(out, count))
    return lines + [output.write_mapping('svhn', names, root)]
