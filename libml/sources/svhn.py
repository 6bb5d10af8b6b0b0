"""SVHN (Netzer et al., 2011), format 2: cropped 32x32 digits, read with scipy.io.loadmat.

Reads train_32x32.mat, test_32x32.mat and extra_32x32.mat: MATLAB v5 files (zlib-compressed
variables or not) holding X, uint8 [32, 32, 3, N] (row, column, channel, image), and y, [N, 1]
with the digit of each image, 10 standing for 0.
Writes svhn-train (73,257 images), svhn-test (26,032), svhn-extra (531,131), with digit d as
label d, and svhn_class_mappings.json ("0".."9").

Each file is loaded whole: extra_32x32.mat holds 1.6 GB of pixels; building svhn-extra peaked
at 2.3 GB of memory (loading alone: 1.7 GB).
loadmat believes the sizes a file declares, so before it is called a file is refused when it is
larger on disk than its part can be, when it decompresses to more (counted in constant memory),
or when X and y do not have the published shapes.
"""
import os
import struct
import warnings
import zlib

import numpy as np

from libml.sources import archives, download, output
from libml.utils import UserError

# Images in each published file: no file of that name may hold more.
PARTS = {'train': 73_257, 'test': 26_032, 'extra': 531_131}
NAMES = [str(d) for d in range(10)]
IMAGE_BYTES = 32 * 32 * 3
_NUMERIC = ('double', 'single', 'int8', 'uint8', 'int16', 'uint16', 'int32', 'uint32', 'int64',
            'uint64')


def max_bytes(images):
    """The most a file of `images` images can hold: X, y as float64 (as published), and 16 MiB
    to spare for headers and compression overhead."""
    return images * (IMAGE_BYTES + 8) + (16 << 20)


def inflated_size(path, limit):
    """Bytes of the variables of a MATLAB v5 file once decompressed, counted up to `limit`.

    Hand-written (top-level tags, then zlib in constant memory): loadmat trusts the byte count
    inside a compressed variable, so a 1 MB file whose shapes pass the header check can make it
    decompress gigabytes.
    """
    total, end = 0, os.path.getsize(path)
    with open(path, 'rb') as f:
        header = f.read(128)
        order = {b'IM': '<', b'MI': '>'}.get(header[126:128])
        if order is None or struct.unpack(order + 'H', header[124:126])[0] != 0x0100:
            raise ValueError('not a MATLAB 5 .mat file')
        while total <= limit and len(tag := f.read(8)) == 8:
            mtype, nbytes = struct.unpack(order + 'II', tag)
            start = f.tell()
            if mtype == 15:  # miCOMPRESSED: a zlib stream
                total += _inflated(f, nbytes, limit - total)
            else:
                total += min(nbytes, end - start)
            f.seek(start + nbytes)
    return total


def _inflated(f, nbytes, limit):
    """Bytes the `nbytes` of zlib data at f's position inflate to, counted up to `limit`."""
    z, total = zlib.decompressobj(), 0
    while nbytes > 0 and total <= limit:
        block = f.read(min(nbytes, 1 << 16))
        if not block:
            break
        nbytes -= len(block)
        while block and total <= limit:  # at most 1 MiB out at a time
            total += len(z.decompress(block, 1 << 20))
            block = z.unconsumed_tail
    return total


def check_headers(variables, max_images):
    """The image count of a file whose X and y (scipy.io.whosmat: name, shape, class) have the
    published shapes; a variable whose name is repeated is checked in every copy."""
    if missing := {'X', 'y'} - {name for name, _, _ in variables}:
        raise ValueError(f'no variable {", ".join(sorted(missing))}')
    count = next(int(np.prod(shape)) for name, shape, _ in variables if name == 'y')
    if count > max_images:
        raise ValueError(f'y declares {count:,} images, the published file at most '
                         f'{max_images:,}')
    for name, shape, kind in variables:
        if name == 'X' and shape != (32, 32, 3, count):
            raise ValueError(f'X is {shape}, expected (32, 32, 3, {count})')
        if name == 'y' and np.prod(shape) != count:
            raise ValueError(f'y is {shape}, expected {count} values')
        if name in ('X', 'y') and kind not in _NUMERIC:
            raise ValueError(f'{name} is {kind}, not a numeric array')
    return count


def read_svhn(path, max_images):
    """images uint8 [N, 32, 32, 3] (a view of the loaded X) and labels int64 [N] (digit 0 is
    label 0) of an SVHN .mat file that may hold `max_images` images."""
    import scipy.io  # slow to import; only this subset needs it

    limit = max_bytes(max_images)
    if (size := os.path.getsize(path)) > limit:
        raise _not_published(path, f'it has {size:,} bytes, more than the published one can '
                             f'have ({limit:,})')
    with archives.archive_errors(path, (scipy.io.matlab.MatReadError, NotImplementedError)):
        # Before whosmat: scipy decompresses a compressed header to read it, and it can be a bomb.
        if inflated_size(path, limit) > limit:
            raise _not_published(path, f'it decompresses to more than {limit:,} bytes, more than '
                                 'the published one can hold (a damaged file or a decompression '
                                 'bomb)')
        count = check_headers(scipy.io.whosmat(path), max_images)
        with warnings.catch_warnings(record=True):  # a damaged variable is refused below
            mat = scipy.io.loadmat(path, variable_names=['X', 'y'])
        for name in ('X', 'y'):
            if isinstance(mat[name], str):  # loadmat's "Read error: ..." for a damaged variable
                raise ValueError(f'{name}: {mat[name]}')
        labels = mat['y'].reshape(-1).astype(np.int64)
        if count and not 1 <= labels.min() <= labels.max() <= 10:
            raise ValueError('y holds values outside 1..10')
    return mat['X'].transpose(3, 0, 1, 2).astype(np.uint8, copy=False), labels % 10


def _not_published(path, why):
    return UserError(f'{path} is not the published file: {why}; {download.replace_hint(path)}.')


def create_svhn(root, archive_dir):
    # All three archives first: a failed download then stops the run before anything is written.
    paths = {part: download.archive(f'{part}_32x32.mat', archive_dir) for part in PARTS}
    lines = [_write_part(part, path, root) for part, path in paths.items()]
    return lines + [output.write_mapping('svhn', NAMES, root)]


def _write_part(part, path, root):
    """One file in, one record file out: its pixels are freed before the next file is loaded."""
    images, labels = read_svhn(path, PARTS[part])
    return output.write_part('svhn', part, root, images, labels, (32, 32, 3), NAMES)
