"""Reading downloaded files, which are untrusted input: damaged, foreign or hostile.

- Errors: every way such a file fails to parse becomes one UserError that names it and says how
  to get a good copy (archive_errors).
- tar (CIFAR, STL-10): members are read in place, never extracted to disk, in one forward pass;
  each is refused when its declared size is above its MEMBER_LIMITS, and never more than that
  is read, so a decompression bomb cannot fill memory.
- pickle (CIFAR): a restricted unpickler, hand-written because the standard one calls whatever
  function a pickle names and has no allow-list: it rebuilds plain data and numpy arrays only.
"""
import contextlib
import functools
import importlib
import io
import os
import pickle
import struct
import tarfile
import zlib

import numpy as np

from libml.sources.download import replace_hint
from libml.utils import UserError

_PARSE_ERRORS = (tarfile.TarError, EOFError, zlib.error, pickle.UnpicklingError, struct.error,
                 ValueError, KeyError, TypeError, OSError)


@contextlib.contextmanager
def archive_errors(path, more=()):
    """Turns the many ways a damaged or foreign archive fails to parse (and the exception types
    `more`) into one UserError."""
    try:
        yield
    except (*_PARSE_ERRORS, *more) as e:
        raise UserError(f'{path} is damaged or not the published file ({type(e).__name__}: '
                        f'{e}); {replace_hint(path)}.') from None


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
                        f'a decompression bomb); {replace_hint(path)}.')


def open_tar(path):
    with archive_errors(path):
        return tarfile.open(path, 'r:*')


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
# Pickles: plain data and numpy arrays only.

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
    """Unpickles a Python 2 pickle of a dict (CIFAR's); returns the dict with str keys."""
    obj = RestrictedUnpickler(io.BytesIO(raw), encoding='bytes').load()
    if not isinstance(obj, dict):
        raise ValueError(f'expected a dict, found {type(obj).__name__}')
    return {k.decode('latin1') if isinstance(k, bytes) else k: v for k, v in obj.items()}
