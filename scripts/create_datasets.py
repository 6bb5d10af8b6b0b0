#!/usr/bin/env python3
"""Builds the record files of the public datasets, the shipped `digits` set, or your own images.

Usage:
  scripts/create_datasets.py [SUBSET ...]
  scripts/create_datasets.py custom --name=mydataset --traindir=DIR --testdir=DIR [--unlabeldir=DIR]

SUBSET is digits, cifar10, cifar100, svhn, stl10 or custom; none means all but custom. Flags may
come before or after the subsets; the short forms -n -tr -ts -u of the original work too.

Writes under $ML_DATA (./data when unset), each record file with its metadata `X.tfrecord.json`:
  digits    digits-train (1297), digits-test (500): scikit-learn's 8x8 grey digits, see below
  cifar10   cifar10-train (50000), cifar10-test (10000)
  cifar100  cifar100-train (50000), cifar100-test (10000): the 100 fine labels
  svhn      svhn-train (73257), svhn-test (26032), svhn-extra (531131); digit 0 is label 0
  stl10     stl10-train (5000), stl10-test (8000), stl10-unlabeled (100000, label -1), and
            stl10_folds.json: the 10 predefined training folds of fold_indices.txt as a JSON list of
            10 lists of record indices (0-based) into stl10-train.tfrecord
  custom    {name}-train, {name}-test and, with --unlabeldir, {name}-unlabeled (label -1)
and every dataset's class names in {name}_class_mappings.json ({"0": "airplane", ...}).
Re-running re-creates the files; each appears complete or not at all (never half written).

Public archives are read in place from --archive_dir (default $ML_DATA/downloads) under their
canonical names: cifar-10-python.tar.gz, cifar-100-python.tar.gz, {train,test,extra}_32x32.mat,
stl10_binary.tar.gz. A missing one is downloaded from its canonical URL and checked against its
published MD5. Nothing is extracted to disk, and CIFAR's pickles are read by an unpickler that
accepts only plain data and numpy arrays (a downloaded pickle is untrusted input). No member or
MATLAB element larger than the published files allow is read (MEMBER_LIMITS, MAT_READ_LIMIT), so
a damaged or hostile archive cannot fill memory.

digits: sklearn.datasets.load_digits (1,797 images, values 0..16) scaled to uint8 by
floor(v * 255 / 16 + 0.5), one channel. Test set: 500 images, stratified: class c gets its share
500 * n_c / 1797 rounded by largest remainder (ties to the lower class), and takes the first images
of class c met in the order numpy.random.RandomState(0).permutation(1797); train is the other 1297.
Records keep load_digits order.

custom: --traindir and --testdir hold one sub-folder per class (nested folders inside a class
folder are fine); an image placed directly in them must be named {n}_{class}.ext (as
scripts/rename_files.py names them) and gets that class. Class names: the sorted union of the
training classes; the test set must have the same classes. --unlabeldir is searched recursively
(folders ignored, label -1). The three folders must be distinct and none inside another.
Which files, in which order, and their pixels follow libml/images.py, the module inference uses
too, so a model sees the same pixels for the same file in training and in prediction:
.png .jpg .jpeg in any letter case, regular files only (a FIFO named x.png is skipped); hidden
files and folders, __MACOSX, .DS_Store, Thumbs.db, desktop.ini and other files are ignored.
Images are turned upright from their EXIF orientation. Channels: 1 if every image is greyscale
(1-bit, 8-bit or 16-bit grey, with or without alpha), else 3 (grey images are replicated,
palette/CMYK images converted to RGB). Transparent pixels are composited onto white; 16-bit
grey is scaled to 8 bits by round(v/257). All images must have one size, or pass --img_size=S to
resize every image to SxS (bilinear, antialiased when shrinking, aspect ratio not kept; images
already SxS are kept as they are). An image larger than --max_image_pixels (default 40
megapixels) is refused from its header before anything is decoded. Images that cannot be decoded
(or are too large) are an error listing them, or are left out with --skip_bad_images. Records
follow the natural order of their paths relative to the folder (img2 before img10, folder by
folder). Without --unlabeldir, a {name}-unlabeled file left by an earlier run is removed
(create_split would pick it up).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import libml  # noqa: E402,F401  (sets TensorFlow's environment defaults before TF is imported)

import collections  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import http.client  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import pickle  # noqa: E402
import struct  # noqa: E402
import tarfile  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402
from absl import flags, logging  # noqa: E402
from tqdm import tqdm  # noqa: E402

from libml import data, files, folders, images, utils  # noqa: E402
from libml.utils import UserError  # noqa: E402

FLAGS = flags.FLAGS

PUBLIC = ('digits', 'cifar10', 'cifar100', 'svhn', 'stl10')
SUBSETS = PUBLIC + ('custom',)
CUSTOM_FLAGS = ('name', 'traindir', 'testdir', 'unlabeldir', 'img_size', 'skip_bad_images',
                'max_image_pixels')

# Images encoded and written per step: bounds memory for the big streamed files (SVHN extra,
# STL-10 unlabeled) while keeping TensorFlow's per-call overhead negligible.
CHUNK = 2048


def define_flags():
    """Defines the flags. Called only when run as a script: tests import this module, and absl's
    global flag registry refuses a second definition of a name (e.g. img_size) by another module."""
    flags.DEFINE_string('name', None, 'custom: the dataset name (letters, digits, "_").',
                        short_name='n')
    flags.DEFINE_string('traindir', None, 'custom: training images, one sub-folder per class.',
                        short_name='tr')
    flags.DEFINE_string('testdir', None, 'custom: test images, one sub-folder per class.',
                        short_name='ts')
    flags.DEFINE_string('unlabeldir', None, 'custom: unlabelled images (optional).',
                        short_name='u')
    flags.DEFINE_integer('img_size', None, 'custom: resize every image to this many pixels '
                         'square (needed when the images have different sizes).', lower_bound=1)
    flags.DEFINE_bool('skip_bad_images', False,
                      'custom: leave out images that cannot be decoded or are larger than '
                      '--max_image_pixels (else it is an error).')
    flags.DEFINE_integer('max_image_pixels', images.MAX_IMAGE_PIXELS,
                         'custom: refuse images larger than this many pixels (width x height), '
                         'from their header, before decoding.', lower_bound=1)
    flags.DEFINE_string('archive_dir', None, 'Where the public archives are read from and '
                        'downloaded to (default: $ML_DATA/downloads).')


# ----------------------------------------------------------------------------------------------
# Writing records.

def fill(writer, chunks, total=None):
    """Writes (images [N, H, W, C] uint8, labels [N]) chunks into an open RecordWriter."""
    with tqdm(total=total, desc=os.path.basename(writer.path), unit='img', leave=False) as bar:
        for images, labels in chunks:
            if images.shape[1:] != writer.shape:  # a bug or a damaged file: never write it
                raise ValueError(f'image shape {images.shape[1:]} != {writer.shape}')
            for png, label in zip(data.encode_png(images), labels):
                writer.write(png, label)
            bar.update(len(labels))
    return writer.count


def write_records(path, chunks, shape, class_names, total=None):
    """Writes a record file (atomically) from chunks of images; returns its record count."""
    with data.RecordWriter(path, shape, class_names=class_names) as writer:
        fill(writer, chunks, total)
    return writer.count


def in_chunks(images, labels):
    """Slices in-memory arrays into chunks (views: no copy)."""
    for start in range(0, len(images), CHUNK):
        yield images[start:start + CHUNK], labels[start:start + CHUNK]


def records_line(path, count):
    return f'wrote {path}: {count} records'


def write_mapping(name, class_names, root):
    path = data.write_class_mapping(name, class_names, root)
    return f'wrote {path}: {len(class_names)} classes'


# ----------------------------------------------------------------------------------------------
# Archives: found in place, or downloaded and checked.

@dataclasses.dataclass(frozen=True)
class Archive:
    url: str
    md5: str


ARCHIVES = {
    'cifar-10-python.tar.gz': Archive('https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
                                      'c58f30108f718f92721af3b95e74349a'),
    'cifar-100-python.tar.gz': Archive('https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz',
                                       'eb9058c3a382ffc7106e4002c42a8d85'),
    'train_32x32.mat': Archive('http://ufldl.stanford.edu/housenumbers/train_32x32.mat',
                               'e26dedcc434d2e4c54c9b2d4a06d8373'),
    'test_32x32.mat': Archive('http://ufldl.stanford.edu/housenumbers/test_32x32.mat',
                              'eb5a983be6a315427106f1b164d9cef3'),
    'extra_32x32.mat': Archive('http://ufldl.stanford.edu/housenumbers/extra_32x32.mat',
                               'a93ce644f1a588dc4d68dda5feec44a7'),
    'stl10_binary.tar.gz': Archive('http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz',
                                   '91f7769df0f17e558f3565bffb0c7dfb'),
}


def archive(filename, archive_dir):
    """Path of a public archive in `archive_dir`, downloading it first when it is missing."""
    path = os.path.join(archive_dir, filename)
    if not os.path.exists(path):
        download(ARCHIVES[filename], path)
    return path


def download(source, path):
    """Downloads `source.url` to `path` through a temporary name, checking its MD5."""
    logging.info('%s is missing: downloading %s', path, source.url)
    hint = f'download {source.url} by hand to {path}, or run again.'
    with files.atomic_output(path) as tmp:
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with urllib.request.urlopen(source.url, timeout=60) as response, \
                    open(tmp, 'wb') as out:
                length = response.headers.get('Content-Length')
                with tqdm(total=int(length) if length else None, unit='B', unit_scale=True,
                          desc=os.path.basename(path), leave=False) as bar:
                    while block := response.read(1 << 20):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            reason = getattr(e, 'reason', None) or e
            raise UserError(f'cannot download {source.url} ({reason}); {hint}') from None
        if digest.hexdigest() != source.md5:
            raise UserError(f'{source.url} arrived damaged (MD5 {digest.hexdigest()}, expected '
                            f'{source.md5}); nothing was kept: {hint}')


@contextlib.contextmanager
def archive_errors(path):
    """Turns the many ways a damaged or foreign archive fails to parse into one UserError."""
    try:
        yield
    except (tarfile.TarError, EOFError, zlib.error, pickle.UnpicklingError, struct.error,
            ValueError, KeyError, TypeError, OSError) as e:
        raise UserError(f'{path} is damaged or not the published file ({type(e).__name__}: '
                        f'{e}); {_replace_hint(path)}.') from None


def _replace_hint(path):
    url = ARCHIVES.get(os.path.basename(path))
    return f'delete it to download it again from {url.url}' if url else 'replace it'


def open_tar(path):
    with archive_errors(path):
        return tarfile.open(path, 'r:*')


# The largest size each member we use may have: about twice its size in the published archive
# (in the comment), and for stl10_binary/unlabeled_X.bin (streamed, never held in memory) its
# exact size. A damaged or hostile archive, e.g. a small .tar.gz whose member decompresses to
# gigabytes (a "decompression bomb"), is refused before its bytes fill memory.
MB = 1 << 20
MEMBER_LIMITS = {
    **{f'cifar-10-batches-py/{m}': 64 * MB for m in (  # about 31 MB each
        'data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5',
        'test_batch')},
    'cifar-10-batches-py/batches.meta': 1 * MB,  # 158 bytes
    'cifar-100-python/train': 320 * MB,  # about 155 MB
    'cifar-100-python/test': 64 * MB,  # about 31 MB
    'cifar-100-python/meta': 1 * MB,  # about 1.5 kB
    'stl10_binary/train_X.bin': 5000 * 96 * 96 * 3 * 2,  # 5,000 images of 27,648 bytes
    'stl10_binary/test_X.bin': 8000 * 96 * 96 * 3 * 2,  # 8,000 images
    'stl10_binary/train_y.bin': 1 * MB,  # 5,000 bytes
    'stl10_binary/test_y.bin': 1 * MB,  # 8,000 bytes
    'stl10_binary/class_names.txt': 1 * MB,  # under 100 bytes
    'stl10_binary/fold_indices.txt': 4 * MB,  # about 50 kB
    'stl10_binary/unlabeled_X.bin': 100000 * 96 * 96 * 3,  # 100,000 images, exactly
}


def check_member_size(path, name, size):
    """A UserError naming the archive and member when `size` (declared, or read) is more than
    MEMBER_LIMITS allows."""
    limit = MEMBER_LIMITS.get(name)
    if limit is not None and size > limit:
        raise UserError(f'{path} is not the published archive: its member {name} is larger than '
                        f'the published one can be ({size:,} bytes > {limit:,}; a damaged file or '
                        f'a decompression bomb); {_replace_hint(path)}.')


def tar_members(tar, path, names, infos=()):
    """Reads the named members into memory and finds the entries `infos`, in one pass.

    A .tar.gz can only be read forwards cheaply: going back means decompressing from the start.
    Each member's size is checked against MEMBER_LIMITS before it is read (its declared size)
    and while it is read (never more than the limit is read).
    """
    found, entries = {}, {}
    with archive_errors(path):
        for member in tar:
            name = os.path.normpath(member.name)
            if name in names and member.isfile():
                check_member_size(path, name, member.size)
                limit = MEMBER_LIMITS.get(name, member.size)
                found[name] = tar.extractfile(member).read(limit + 1)
                check_member_size(path, name, len(found[name]))
            elif name in infos and member.isfile():
                check_member_size(path, name, member.size)
                entries[name] = member
            if len(found) == len(names) and len(entries) == len(infos):
                break
    missing = sorted(set(names) - set(found) | set(infos) - set(entries))
    if missing:
        raise UserError(f'{path} lacks {", ".join(missing)}: it is not the published archive; '
                        'delete it to download it again.')
    return found, entries


def read_tar_members(path, names):
    """Reads the named members of a tar archive into memory."""
    with contextlib.closing(open_tar(path)) as tar:
        return tar_members(tar, path, names)[0]


# ----------------------------------------------------------------------------------------------
# CIFAR: tar.gz of Python pickles, read with a restricted unpickler.

def _numpy_function(name, modules):
    """A numpy function by its pickled module path (numpy 2 renamed numpy.core to numpy._core)."""
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return None


def _latin1_encode(text, encoding='latin1'):
    """How Python 3 pickles bytes at protocol 2: _codecs.encode(text, 'latin1'). Only that."""
    if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
        raise pickle.UnpicklingError(f'refusing to call _codecs.encode with {encoding!r}')
    return text.encode('latin1')


@functools.cache
def _safe_globals():
    """The only globals a CIFAR pickle may name: numpy's array and dtype reconstruction."""
    multiarray = ('numpy._core.multiarray', 'numpy.core.multiarray')
    numeric = ('numpy._core.numeric', 'numpy.core.numeric')
    table = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype,
             ('_codecs', 'encode'): _latin1_encode}
    for modules, name in ((multiarray, '_reconstruct'), (numeric, '_frombuffer')):
        function = _numpy_function(name, modules)
        if function is not None:
            table.update({(module, name): function for module in modules})
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data (dict, list, str, bytes, numbers) and numpy arrays, nothing else.

    The general unpickler calls any importable function a pickle names, so a tampered download
    could run code; here every global but numpy's array reconstruction is refused.
    """

    def find_class(self, module, name):
        allowed = _safe_globals().get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name}: only plain data and '
                                         'numpy arrays are allowed')
        return allowed


def load_pickle(raw):
    """Unpickles CIFAR's Python 2 pickles; returns a dict with str keys."""
    obj = RestrictedUnpickler(io.BytesIO(raw), encoding='bytes').load()
    if not isinstance(obj, dict):
        raise ValueError(f'expected a dict, found {type(obj).__name__}')
    return {k.decode('latin1') if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _text(value):
    return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def cifar_batch(raw, label_key, nclass):
    """One CIFAR pickle -> images [N, 32, 32, 3] uint8, labels [N] int64.

    Each row of `data` holds the 1024 red, then green, then blue values of one image, row-major.
    """
    batch = load_pickle(raw)
    rows = np.asarray(batch['data'])
    labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 3072:
        raise ValueError(f'data is {rows.dtype}{list(rows.shape)}, expected uint8[N, 3072]')
    if len(labels) != len(rows) or (len(labels) and not 0 <= labels.min() <= labels.max() < nclass):
        raise ValueError(f'{label_key} do not match the images')
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar(path, folder, train_members, test_member, meta_member, label_key, names_key,
               nclass):
    """Reads a CIFAR archive -> (train images, train labels), (test...), class names."""
    members = [f'{folder}/{m}' for m in (*train_members, test_member, meta_member)]
    raw = read_tar_members(path, members)
    with archive_errors(path):
        names = [_text(n) for n in load_pickle(raw[members[-1]])[names_key]]
        if len(names) != nclass:
            raise ValueError(f'{names_key} lists {len(names)} classes, expected {nclass}')
        train = [cifar_batch(raw[m], label_key, nclass) for m in members[:-2]]
        test = cifar_batch(raw[members[-2]], label_key, nclass)
    train = (np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train]))
    return train, test, names


def write_cifar(name, root, archive_dir, **layout):
    path = archive(layout.pop('archive'), archive_dir)
    train, test, names = load_cifar(path, **layout)
    lines = []
    for part, (images, labels) in (('train', train), ('test', test)):
        out = data.record_path(name, part, root)
        count = write_records(out, in_chunks(images, labels), (32, 32, 3), names, len(labels))
        lines.append(records_line(out, count))
    return lines + [write_mapping(name, names, root)]


def create_cifar10(root, archive_dir):
    return write_cifar('cifar10', root, archive_dir, archive='cifar-10-python.tar.gz',
                       folder='cifar-10-batches-py',
                       train_members=[f'data_batch_{i}' for i in range(1, 6)],
                       test_member='test_batch', meta_member='batches.meta',
                       label_key='labels', names_key='label_names', nclass=10)


def create_cifar100(root, archive_dir):
    return write_cifar('cifar100', root, archive_dir, archive='cifar-100-python.tar.gz',
                       folder='cifar-100-python', train_members=['train'], test_member='test',
                       meta_member='meta', label_key='fine_labels', names_key='fine_label_names',
                       nclass=100)


# ----------------------------------------------------------------------------------------------
# SVHN: MATLAB v5 files, streamed (extra_32x32.mat alone is 1.6 GB of pixels).

_MAT_TYPES = {1: 'i1', 2: 'u1', 3: 'i2', 4: 'u2', 5: 'i4', 6: 'u4', 7: 'f4', 9: 'f8', 12: 'i8',
              13: 'u8'}
_MI_MATRIX, _MI_COMPRESSED = 14, 15


# The published files hold 73,257 (train), 26,032 (test) and 531,131 (extra) images. Reads are
# bounded so a damaged or hostile file (a header declaring a huge element, or a compressed
# element that inflates to gigabytes) is refused before it fills memory: the largest read is one
# chunk of X (CHUNK images) or all of y (at most 4.8 MB, as float64).
SVHN_MAX_IMAGES = 600_000
MAT_READ_LIMIT = 64 * MB


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
    with archive_errors(path), open_mat(path) as variables:
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
        for start in range(0, len(labels), CHUNK):
            n = min(CHUNK, len(labels) - start)
            values = x.read(n * 3072).reshape(n, 3, 32, 32)
            yield values.transpose(0, 3, 2, 1).astype(np.uint8), labels[start:start + n]


def svhn_count(path):
    with archive_errors(path), open_mat(path) as variables:
        return variables['y']().size


def create_svhn(root, archive_dir):
    names = [str(d) for d in range(10)]
    # All three archives first: a failed download then stops the run before anything is written.
    paths = {part: archive(f'{part}_32x32.mat', archive_dir) for part in ('train', 'test', 'extra')}
    lines = []
    for part, path in paths.items():
        out = data.record_path('svhn', part, root)
        count = write_records(out, svhn_chunks(path), (32, 32, 3), names, svhn_count(path))
        lines.append(records_line(out, count))
    return lines + [write_mapping('svhn', names, root)]


# ----------------------------------------------------------------------------------------------
# STL-10: a tar.gz of raw binaries.

STL_SIDE = 96
STL_BYTES = STL_SIDE * STL_SIDE * 3


def stl_images(raw):
    """STL-10 binary -> [N, 96, 96, 3]: each image is 3 planes (R, G, B), each column-major."""
    if len(raw) % STL_BYTES:
        raise ValueError(f'{len(raw)} bytes is not a whole number of 96x96x3 images')
    return np.frombuffer(raw, np.uint8).reshape(-1, 3, STL_SIDE, STL_SIDE).transpose(0, 3, 2, 1)


def stl_labels(raw, count):
    labels = np.frombuffer(raw, np.uint8).astype(np.int64) - 1  # 1..10 -> 0..9
    if len(labels) != count or (count and not 0 <= labels.min() <= labels.max() < 10):
        raise ValueError('the labels do not match the images')
    return labels


def stl_folds(text, count):
    """fold_indices.txt: one line per fold, 0-based indices into the training images."""
    folds = [[int(i) for i in line.split()] for line in text.splitlines() if line.strip()]
    if any(not 0 <= i < count for fold in folds for i in fold):
        raise ValueError('a fold index is out of range')
    return folds


def stl_unlabeled_chunks(tar, member, path):
    """Streams the unlabelled images from the tar member: 100,000 of them are 2.8 GB."""
    with archive_errors(path):
        f = tar.extractfile(member)
        for start in range(0, member.size, CHUNK * STL_BYTES):
            raw = f.read(min(CHUNK * STL_BYTES, member.size - start))
            images = stl_images(raw)
            yield images, np.full(len(images), -1, np.int64)


def read_stl10(tar, path):
    """Class names, {part: (images, labels)} for train and test, folds, the unlabeled entry."""
    small = ['class_names.txt', 'fold_indices.txt', 'train_X.bin', 'train_y.bin', 'test_X.bin',
             'test_y.bin']
    raw, entries = tar_members(tar, path, [f'stl10_binary/{m}' for m in small],
                               ['stl10_binary/unlabeled_X.bin'])
    raw = {k.split('/', 1)[1]: v for k, v in raw.items()}
    with archive_errors(path):
        names = [n.strip() for n in raw['class_names.txt'].decode('utf-8').splitlines()
                 if n.strip()]
        parts = {}
        for part in ('train', 'test'):
            images = stl_images(raw[f'{part}_X.bin'])
            parts[part] = images, stl_labels(raw[f'{part}_y.bin'], len(images))
        folds = stl_folds(raw['fold_indices.txt'].decode('ascii'), len(parts['train'][0]))
    return names, parts, folds, entries['stl10_binary/unlabeled_X.bin']


def create_stl10(root, archive_dir):
    path = archive('stl10_binary.tar.gz', archive_dir)
    lines = []
    with contextlib.closing(open_tar(path)) as tar:
        names, parts, folds, unlabeled = read_stl10(tar, path)
        for part in ('train', 'test'):
            out = data.record_path('stl10', part, root)
            images, labels = parts.pop(part)  # freed once written
            count = write_records(out, in_chunks(images, labels), (96, 96, 3), names, len(labels))
            lines.append(records_line(out, count))
        del images, labels
        out = data.record_path('stl10', 'unlabeled', root)
        count = write_records(out, stl_unlabeled_chunks(tar, unlabeled, path), (96, 96, 3),
                              names, unlabeled.size // STL_BYTES)
        lines.append(records_line(out, count))
    folds_path = os.path.join(root, 'stl10_folds.json')
    files.write_json(folds_path, folds)
    lines.append(f'wrote {folds_path}: {len(folds)} folds')
    return lines + [write_mapping('stl10', names, root)]


# ----------------------------------------------------------------------------------------------
# digits: shipped inside scikit-learn.

DIGITS_TEST_SIZE = 500


def digits_test_mask(labels, test_size=DIGITS_TEST_SIZE, seed=0):
    """The documented stratified split: True for the test images (see the module doc)."""
    counts = np.bincount(labels)
    exact = test_size * counts / len(labels)
    quota = np.floor(exact).astype(int)
    by_remainder = np.argsort(-(exact - quota), kind='stable')
    quota[by_remainder[:test_size - quota.sum()]] += 1
    mask = np.zeros(len(labels), bool)
    for i in np.random.RandomState(seed).permutation(len(labels)):
        if quota[labels[i]]:
            quota[labels[i]] -= 1
            mask[i] = True
    return mask


def create_digits(root, archive_dir=None):
    from sklearn.datasets import load_digits  # slow to import; only this subset needs it

    digits = load_digits()
    images = np.floor(digits.images * 255 / 16 + 0.5).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    test = digits_test_mask(labels)
    names = [str(d) for d in range(10)]
    lines = []
    for part, mask in (('train', ~test), ('test', test)):
        out = data.record_path('digits', part, root)
        count = write_records(out, [(images[mask], labels[mask])], (8, 8, 1), names,
                              int(mask.sum()))
        lines.append(records_line(out, count))
    return lines + [write_mapping('digits', names, root)]


# ----------------------------------------------------------------------------------------------
# custom: folders of images. Listing, order and pixels: libml/images.py, shared with inference.

def _warn_ignored(skipped, folder):
    """Warns about the files passed over that may have been meant as images."""
    quiet = (folders.HIDDEN, folders.MACOS_FOLDER)
    others = [f'{rel} ({reason})' for rel, reason in skipped if reason not in quiet
              and os.path.basename(rel).lower() not in folders.SYSTEM_FILES]
    if others:
        logging.warning('ignored %d file(s) in %s that are not usable images, e.g. %s',
                        len(others), folder, others[0])


def _require_dir(folder, flag):
    if not folder:
        raise UserError(f'custom needs {flag}=DIR.')
    if not os.path.isdir(folder):
        raise UserError(f'{flag}={folder}: no such folder.')


def check_folders(traindir, testdir, unlabeldir=None):
    """Refuses folders that are the same or inside one another: test images would be trained on
    (or counted twice), unlabelled images would include labelled ones."""
    given = [(flag, folder) for flag, folder in (('--traindir', traindir), ('--testdir', testdir),
                                                 ('--unlabeldir', unlabeldir)) if folder]
    real = {flag: os.path.realpath(folder) for flag, folder in given}
    for i, (a, a_dir) in enumerate(given):
        for b, b_dir in given[i + 1:]:
            if real[a] == real[b]:
                raise UserError(f'{a}={a_dir} and {b}={b_dir} are the same folder; give each '
                                'part its own folder.')
            for (inner, inner_dir), (outer, outer_dir) in (((a, a_dir), (b, b_dir)),
                                                           ((b, b_dir), (a, a_dir))):
                if os.path.commonpath([real[inner], real[outer]]) == real[outer]:
                    raise UserError(f'{inner}={inner_dir} is inside {outer}={outer_dir}: its '
                                    f'images would also be read as {outer} images; give each '
                                    'part its own folder, side by side.')


def scan_labelled(folder, flag):
    """[(path, class name)] of a train/test folder: class sub-folders, or flat {n}_{class}.ext."""
    _require_dir(folder, flag)
    listing = folders.list_images(folder)
    _warn_ignored(listing.skipped, folder)
    items, unnamed = [], []
    for rel in listing.images:
        cls = folders.class_of(rel)
        if cls is None:
            unnamed.append(rel)
        else:
            items.append((listing.path(rel), cls))
    used = {folders.class_of(rel, numbered_names=False) for rel in listing.images}
    if empty := [f for f in listing.folders if f not in used]:
        raise UserError(f'{flag}={folder}: class folder(s) without images: {", ".join(empty)}; '
                        'add images or remove them.')
    if unnamed:
        raise UserError(f'{flag}={folder}: cannot tell the class of {_some(unnamed)}: put images '
                        'in one sub-folder per class, or name them {n}_{class}.png.')
    if not items:
        raise UserError(f'{flag}={folder} holds no .png/.jpg/.jpeg images; it needs one '
                        'sub-folder of images per class.')
    return items


def scan_unlabeled(folder, flag='--unlabeldir'):
    _require_dir(folder, flag)
    listing = folders.list_images(folder)
    _warn_ignored(listing.skipped, folder)
    if not listing.images:
        raise UserError(f'{flag}={folder} holds no .png/.jpg/.jpeg images.')
    return [listing.path(rel) for rel in listing.images]


def _some(names, limit=5):
    names = [str(n) for n in names]
    more = f' and {len(names) - limit} more' if len(names) > limit else ''
    return ', '.join(names[:limit]) + more


def custom_plan(traindir, testdir, unlabeldir):
    """Class names, and {part: [(path, label)]} for train, test and (optionally) unlabeled."""
    check_folders(traindir, testdir, unlabeldir)
    train = scan_labelled(traindir, '--traindir')
    test = scan_labelled(testdir, '--testdir')
    names = sorted({c for _, c in train})
    test_classes = {c for _, c in test}
    if extra := sorted(test_classes - set(names)):
        raise UserError(f'class(es) {_some(extra)} in --testdir={testdir} are not in '
                        f'--traindir={traindir}.')
    if absent := [c for c in names if c not in test_classes]:
        raise UserError(f'class(es) {_some(absent)} of --traindir={traindir} have no images in '
                        f'--testdir={testdir}.')
    index = {c: i for i, c in enumerate(names)}
    parts = {'train': [(p, index[c]) for p, c in train], 'test': [(p, index[c]) for p, c in test]}
    if unlabeldir:
        parts['unlabeled'] = [(p, -1) for p in scan_unlabeled(unlabeldir)]
    return names, parts


def common_format(probes, img_size):
    """(size, channels) every image is converted to; errors name two files of different sizes.

    probes: {path: images.ImageInfo}. Channels: 1 if every image is grey, else 3.
    """
    sizes = collections.defaultdict(list)
    for path, info in probes.items():
        sizes[info.width, info.height].append(path)
    channels = 1 if all(info.grey for info in probes.values()) else 3
    if img_size:
        return (img_size, img_size), channels
    if len(sizes) > 1:
        (a, a_paths), (b, b_paths) = sorted(sizes.items(), key=lambda kv: -len(kv[1]))[:2]
        raise UserError(f'images have different sizes: {a_paths[0]} is {a[0]}x{a[1]}, '
                        f'{b_paths[0]} is {b[0]}x{b[1]}; pass --img_size=S to resize all to SxS.')
    return next(iter(sizes)), channels


def decode_chunks(items, size, channels, bad, max_pixels=images.MAX_IMAGE_PIXELS):
    """Streams (images uint8 [n, H, W, C], labels [n]) of `items` [(path, label)], CHUNK at a
    time, decoded in parallel ahead of the writer; unreadable ones go to `bad`."""
    paths = [path for path, _ in items]
    labels = np.array([label for _, label in items], np.int64)
    ds, failures = images.pixel_dataset(paths, size[1], size[0], channels, max_pixels)
    for rows, pixels in ds.batch(CHUNK).as_numpy_iterator():
        yield pixels, labels[rows]
    bad += [(paths[row], reason) for row, reason in sorted(failures.items())]


def create_custom(root, name, traindir, testdir, unlabeldir=None, img_size=None,
                  skip_bad_images=False, max_image_pixels=images.MAX_IMAGE_PIXELS):
    """Writes {name}-train/test(/unlabeled) from folders of images: all of them or none."""
    data.check_name(name)
    names, parts = custom_plan(traindir, testdir, unlabeldir)
    good, bad = probe_all([p for items in parts.values() for p, _ in items], max_image_pixels,
                          skip_bad_images)
    size, channels = common_format(good, img_size)
    writers = {}
    with contextlib.ExitStack() as stack:  # all files are kept, or none
        for part, items in parts.items():
            writers[part] = stack.enter_context(data.RecordWriter(
                data.record_path(name, part, root), (size[1], size[0], channels),
                class_names=names))
            items = [item for item in items if item[0] in good]
            fill(writers[part], decode_chunks(items, size, channels, bad, max_image_pixels),
                 len(items))
        _check_bad(bad, skip_bad_images)
        _check_counts(writers, names)
    lines = [records_line(w.path, w.count) for w in writers.values()]
    if not unlabeldir:
        lines += _remove_stale_unlabeled(name, root)
    return lines + [write_mapping(name, names, root)]


def probe_all(paths, max_pixels, skip_too_large=False):
    """Reads every image's header, in parallel: ({path: ImageInfo} of the readable ones,
    [(path, reason)] of the others).

    An image above `max_pixels` is an error at once, before anything is decoded, unless
    `skip_too_large` (then it is one of the others).
    """
    bar = lambda results: tqdm(results, total=len(paths), desc='checking images', unit='img',
                               leave=False)
    good, bad, large = {}, [], []
    for path, info in zip(paths, images.probe_all(paths, max_pixels, progress=bar)):
        if isinstance(info, images.ImageTooLarge):
            large.append((path, str(info)))
        elif isinstance(info, images.ImageError):
            bad.append((path, str(info)))
        else:
            good[path] = info
    if large and not skip_too_large:
        raise UserError(f'{len(large)} image(s) are too large: '
                        f'{_some(f"{p} ({r})" for p, r in large)}; pass a larger '
                        '--max_image_pixels, or --skip_bad_images to leave them out.')
    bad += large
    if not good:
        raise UserError(f'none of the {len(paths)} images can be read, e.g. {bad[0][0]} '
                        f'({bad[0][1]}).')
    return good, bad


def _check_bad(bad, skip):
    """Undecodable images: an error listing them, or (skip) a warning saying how many."""
    if not bad:
        return
    shown = 10
    if skip or len(bad) > shown:  # the error message lists only the first ones
        for path, reason in bad:
            logging.warning('cannot decode %s (%s)', path, reason)
    if not skip:
        listing = _some([f'{p} ({r})' for p, r in bad], limit=shown)
        raise UserError(f'{len(bad)} image(s) cannot be decoded: {listing}; fix or remove them, '
                        'or pass --skip_bad_images to leave them out.')
    logging.warning('skipped %d image(s) that cannot be decoded (--skip_bad_images).', len(bad))


def _check_counts(writers, names):
    """After skipping bad images, every labelled part must still have images."""
    for part in ('train', 'test'):
        if not writers[part].count:
            raise UserError(f'no readable {part} images are left.')
        lacking = [c for i, c in enumerate(names) if not writers[part].label_counts.get(i)]
        if lacking:
            logging.warning('%s: no readable images left of class(es) %s', part, _some(lacking))


def _remove_stale_unlabeled(name, root):
    """A {name}-unlabeled file left by an earlier run would be picked up by create_split."""
    path = data.record_path(name, 'unlabeled', root)
    if not os.path.exists(path):
        return []
    for stale in (path, data.meta_path(path)):
        if os.path.exists(stale):
            os.remove(stale)
    logging.warning('removed %s from an earlier run: this run has no --unlabeldir.', path)
    return [f'removed {path} (no --unlabeldir this time)']


# ----------------------------------------------------------------------------------------------
# The command.

CREATORS = {'digits': create_digits, 'cifar10': create_cifar10, 'cifar100': create_cifar100,
            'svhn': create_svhn, 'stl10': create_stl10}


def parse_subsets(args):
    """The subsets to build, in the given order without repeats; none given = the public ones."""
    unknown = [a for a in args if a not in SUBSETS]
    if unknown:
        raise UserError(f'unknown subset(s) {", ".join(unknown)}; choose from '
                        f'{", ".join(SUBSETS)} (none = {" ".join(PUBLIC)}).')
    return list(dict.fromkeys(args)) or list(PUBLIC)


def check_custom_flags(subsets):
    """Custom-only flags need the custom subset; custom needs its name and folders."""
    if 'custom' not in subsets:
        given = [f'--{f}' for f in CUSTOM_FLAGS if FLAGS[f].present]
        if given:
            raise UserError(f'{", ".join(given)} only apply to the custom subset; e.g. '
                            'create_datasets.py custom --name=mydataset --traindir=... '
                            '--testdir=...')
        return
    if not FLAGS.name:
        raise UserError('custom needs --name=NAME (letters, digits, "_"), e.g. --name=mydataset.')
    data.check_name(FLAGS.name)
    _require_dir(FLAGS.traindir, '--traindir')
    _require_dir(FLAGS.testdir, '--testdir')
    if FLAGS.unlabeldir:
        _require_dir(FLAGS.unlabeldir, '--unlabeldir')
    check_folders(FLAGS.traindir, FLAGS.testdir, FLAGS.unlabeldir)


def main(argv):
    subsets = parse_subsets(argv[1:])
    check_custom_flags(subsets)
    root = utils.ml_data()
    archive_dir = FLAGS.archive_dir or os.path.join(root, 'downloads')
    for subset in subsets:
        if subset == 'custom':
            lines = create_custom(root, FLAGS.name, FLAGS.traindir, FLAGS.testdir,
                                  FLAGS.unlabeldir, FLAGS.img_size, FLAGS.skip_bad_images,
                                  FLAGS.max_image_pixels)
        else:
            lines = CREATORS[subset](root, archive_dir)
        print('\n'.join(lines), flush=True)  # the tool's output: what was written


if __name__ == '__main__':
    define_flags()
    utils.run(main)
