"""Record files: the Example format, writing (with metadata), reading, PNG encoding.

Record format (kept from the original so other tools read our files): a `tf.train.Example` with
  image  bytes  an encoded PNG
  label  int64  the class index, -1 for an unlabeled image
  source int64  optional: index of the original image in its split's unlabeled file (written by
                make_aug_copy so the trainer can keep validation images and their copies out of
                training); readers accept records without it.

Every record file `X.tfrecord` we write has a metadata file `X.tfrecord.json` beside it:
  {"count": N, "height": H, "width": W, "channels": C, "nclass": K or null,
   "class_names": [...] or null, "label_counts": {"0": n0, ..., "-1": n_unlabeled}}
so no reader scans a file to learn its facts. The metadata file is written after the record file
is complete and in place, so its presence means a complete record file. A record file without one
(written by another tool, or by a run stopped between the two), or whose metadata file is older
than itself (it describes an earlier file of that name), is scanned instead, with a warning. A
metadata file that is not of the form above is an error that says how to fix it (read_meta).
Files written by filter_dataset.py also hold "class_map": {"2": 0, ..., "0": -1}: label in the
filtered file -> label here, for every class kept (-1: out of distribution, no class of the model).

TensorFlow is imported at its first use (`tf` below), not with this module: the worker processes
of create_datasets.py custom encode PNGs here (encode_pngs) and never need it, and it takes
seconds and hundreds of megabytes to load.
"""
import contextlib
import json
import os
import re
import struct
import zlib

import numpy as np
from absl import logging

from libml.names import meta_path, require_file
from libml.utils import UserError, check_interrupted
from libml.files import atomic_output, read_json, write_json


class _TensorFlow:
    """The tensorflow module, imported when one of its attributes is first used."""

    def __getattr__(self, name):
        import tensorflow
        globals()['tf'] = tensorflow  # this module's later uses find it directly
        return getattr(tensorflow, name)


tf = _TensorFlow()


def record_features():
    return {'image': tf.io.FixedLenFeature([], tf.string),
            'label': tf.io.FixedLenFeature([], tf.int64),
            'source': tf.io.FixedLenFeature([], tf.int64, default_value=-1)}


def make_example(png, label, source=None):
    """Serialized tf.train.Example of one record, without TensorFlow (the worker processes of
    create_datasets.py custom build records; and it is twice as fast as tf.train): the bytes of
    tf.train.Example(...).SerializeToString(deterministic=True), so a record has the same bytes
    in every process. Protobuf fields: Example.features (1) holds one Features.feature (1) map
    entry per feature, its key (1) in key order and its Feature (2): bytes_list (1) or int64_list
    (3) with one value (1). tests/test_create_datasets.py compares it with tf.train.Example."""
    features = (_feature(b'\n\x05image\x12', b'\n', png)
                + _feature(b'\n\x05label\x12', b'\x1a', _varint(int(label))))
    if source is not None:
        features += _feature(b'\n\x06source\x12', b'\x1a', _varint(int(source)))
    return b'\n' + _varint(len(features)) + features


def _feature(key, kind, value):
    """A Features.feature map entry: `key` (the entry's key field, then its value field's tag) and
    a Feature whose list (tag `kind`) holds `value`: bytes, or the varint of an int64 (a packed
    list of one)."""
    values = b'\n' + _varint(len(value)) + value
    feature = kind + _varint(len(values)) + values
    entry = key + _varint(len(feature)) + feature
    return b'\n' + _varint(len(entry)) + entry


def _varint(value):
    """Protobuf's varint of an int64 (a negative one as its 64-bit two's complement)."""
    if 0 <= value < 0x80:
        return bytes((value,))
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def serialize_records(png, label, source=None):
    """make_example for a batch, as TF ops (usable in tf.data): [N] png, [N] label -> [N] records,
    built off the Python thread."""

    def encode(message_type, fields, values):  # one value per field and record
        sizes = tf.ones([tf.shape(values[0])[0], len(values)], tf.int32)
        return tf.io.encode_proto(sizes, [v[:, None] for v in values], fields, message_type)

    def int64_feature(x):
        values = encode('tensorflow.Int64List', ['value'], [tf.cast(x, tf.int64)])
        return encode('tensorflow.Feature', ['int64_list'], [values])

    features = {'image': encode('tensorflow.Feature', ['bytes_list'],
                                [encode('tensorflow.BytesList', ['value'], [png])]),
                'label': int64_feature(label)}
    if source is not None:
        features['source'] = int64_feature(source)
    entries = [encode('tensorflow.Features.FeatureEntry', ['key', 'value'],
                      [tf.fill(tf.shape(png), key), value]) for key, value in features.items()]
    sizes = tf.fill([tf.shape(png)[0], 1], len(entries))
    features = tf.io.encode_proto(sizes, [tf.stack(entries, axis=1)], ['feature'],
                                  'tensorflow.Features')
    return encode('tensorflow.Example', ['features'], [features])


def parse_records(serialized):
    """Parses a batch [N] of serialized records -> {'image': [N] png, 'label': [N], 'source': [N]}."""
    return tf.io.parse_example(serialized, record_features())


def encode_png(images):
    """Encodes uint8 images [N, H, W, C] to a list of PNG bytes, in parallel, order kept.

    Batches of 256 are encoded by one map_fn each: one tf.data step per image costs about as
    much CPU as the encoding itself (benchmarks/bench_datasets.py).
    """
    encode = lambda batch: tf.map_fn(tf.io.encode_png, batch, fn_output_signature=tf.string)
    ds = tf.data.Dataset.from_tensor_slices(images).batch(256).map(
        encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return [png for batch in ds.as_numpy_iterator() for png in batch]


def encode_pngs(images):
    """Encodes uint8 images [N, H, W, C] (C = 1 to 4) to a list of PNG bytes without TensorFlow:
    byte for byte what tf.io.encode_png (and encode_png) writes.

    TensorFlow writes through libpng 1.6 with its defaults, which this follows: each row gets the
    filter (None, Sub, Up, Average, Paeth) whose bytes, read as signed, have the smallest sum of
    absolute values, the first one on a tie (a 1-pixel-high image tries only None and Sub, a
    1-pixel-wide one only None and Up); deflate at level 6 with memLevel 9 and strategy Z_FILTERED
    (Z_DEFAULT_STRATEGY for a 1x1 image, left unfiltered), its window shrunk for data of at most
    16 KiB (_window_bits), and the zlib header's window size then lowered to the smallest that
    holds the data (_fit_zlib_header); the stream cut into IDAT chunks of 8192 bytes.
    tests/test_create_datasets.py compares the two encoders.
    """
    n, height, width, channels = images.shape
    header = _PNG_SIGNATURE + _png_chunk(b'IHDR', struct.pack(
        '>IIBBBBB', width, height, 8, _PNG_COLOUR_TYPES[channels], 0, 0, 0))
    data_size = height * (width * channels + 1)
    bits = _window_bits(data_size)
    strategy = zlib.Z_DEFAULT_STRATEGY if height == width == 1 else zlib.Z_FILTERED
    pngs = []
    for rows in _filtered_rows(images):
        z = zlib.compressobj(6, zlib.DEFLATED, bits, 9, strategy)
        data = _fit_zlib_header(z.compress(rows) + z.flush(), data_size)
        idat = b''.join(_png_chunk(b'IDAT', data[i:i + _IDAT_SIZE])
                        for i in range(0, len(data), _IDAT_SIZE))
        pngs.append(header + idat + _PNG_END)
    return pngs


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # colour type -> channels of tf.io.decode_png
_PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> colour type
_IDAT_SIZE = 8192  # libpng's default output buffer: one IDAT chunk each time it fills
_FILTER_BLOCK = 4 << 20  # image bytes filtered at a time: bounds the temporaries of large images


def _png_chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


_PNG_END = _png_chunk(b'IEND', b'')


def _filtered_rows(images):
    """uint8 [N, H, W, C] -> uint8 [N, H, 1 + W*C]: each row as libpng filters it, its filter type
    first (see encode_pngs). The rows are filtered a block at a time."""
    n, height, width, channels = images.shape
    flat = images.reshape(n, height, width * channels)
    out = np.empty((n, height, width * channels + 1), np.uint8)
    allowed = np.ones(5, bool)  # None, Sub, Up, Average, Paeth
    if height == 1:
        allowed[2:] = False
    if width == 1:
        allowed[[1, 3, 4]] = False
    step = max(1, _FILTER_BLOCK // (n * width * channels))  # rows per block
    for start in range(0, height, step):
        stop = min(height, start + step)
        # A zero row above the image and a zero pixel left of it, as the filters define them.
        padded = np.zeros((n, stop - start + 1, (width + 1) * channels), np.uint8)
        padded[:, 1:, channels:] = flat[:, start:stop]
        if start:
            padded[:, 0, channels:] = flat[:, start - 1]
        x, left = padded[:, 1:, channels:], padded[:, 1:, :-channels]
        up, corner = padded[:, :-1, channels:], padded[:, :-1, :-channels]
        filtered = np.empty((5,) + x.shape, np.uint8)  # uint8 arithmetic: modulo 256
        filtered[0] = x
        np.subtract(x, left, out=filtered[1])
        np.subtract(x, up, out=filtered[2])
        np.subtract(x, (left & up) + ((left ^ up) >> 1), out=filtered[3])  # floor of the mean
        # Paeth: whichever of left, up and corner is nearest to left + up - corner (ties in that
        # order); their distances to it are |up - corner|, |left - corner| and |the sum of both|.
        to_left = np.subtract(up, corner, dtype=np.int16)
        to_up = np.subtract(left, corner, dtype=np.int16)
        to_corner = np.abs(to_left + to_up)
        np.abs(to_left, out=to_left)
        np.abs(to_up, out=to_up)
        paeth = np.where((to_left <= to_up) & (to_left <= to_corner), left,
                         np.where(to_up <= to_corner, up, corner))
        np.subtract(x, paeth, out=filtered[4])
        # A filter's cost: the sum of |byte read as signed|. abs() of int8 -128 wraps to -128,
        # whose byte is 128: right. Row sums fit 16 bits up to 511 bytes a row.
        total = np.uint16 if width * channels < 512 else np.int64
        cost = np.abs(filtered.view(np.int8)).view(np.uint8).sum(axis=3, dtype=total)
        cost = cost.astype(np.int64)
        cost[~allowed] = np.iinfo(np.int64).max
        best = cost.argmin(axis=0)  # [n, rows]
        rows = stop - start
        out[:, start:stop, 0] = best
        out[:, start:stop, 1:] = filtered.reshape(5, n * rows, -1)[
            best.ravel(), np.arange(n * rows)].reshape(n, rows, -1)
    return out


def _window_bits(data_size):
    """libpng's deflate window for `data_size` bytes of filtered rows: halved while the data and
    deflate's 262 bytes of look-ahead still fit in half of it (only for data up to 16 KiB)."""
    bits = 15
    if data_size <= 16384:
        while data_size + 262 <= 1 << (bits - 1):
            bits -= 1
    return bits


def _fit_zlib_header(data, data_size):
    """The zlib stream `data` with its header declaring the smallest window that holds
    `data_size` bytes (libpng rewrites the first two bytes so; the data are unchanged)."""
    info = data[0] >> 4  # the window is 2 ** (info + 8) bytes
    if data_size > 16384 or data_size > 1 << (info + 7):
        return data
    info -= 1
    while info > 0 and data_size <= 1 << (info + 7):
        info -= 1
    cmf = info << 4 | data[0] & 0x0F
    flags = data[1] & 0xE0
    flags += 31 - (cmf << 8 | flags) % 31  # the header, read as a number, is a multiple of 31
    return bytes([cmf, flags]) + data[2:]


def png_shape(raw):
    """(height, width, channels) from the header of the first PNG in `raw` (a PNG, or a serialized
    record holding one), without decoding it; None if there is none."""
    at = raw.find(_PNG_SIGNATURE)
    if at < 0 or raw[at + 12:at + 16] != b'IHDR' or len(raw) < at + 26:
        return None
    width, height = struct.unpack('>II', raw[at + 16:at + 24])
    channels = _PNG_CHANNELS.get(raw[at + 25])
    return (height, width, channels) if channels else None


class RecordWriter:
    """Writes a record file and then its metadata: both appear complete, or the record file does
    not change. The record file is renamed into place first and the metadata last, so a metadata
    file present means its record file is complete (a stale one is removed before the rename).

    with RecordWriter(path, shape=(h, w, c), nclass=10, class_names=names) as w:
        w.write(png, label)                # or w.write_serialized(example_bytes, label)

    The metadata states what was written, so a wrong input metadata file is not copied into new
    files: the count and label counts; the image shape read from the PNG header of every record
    (`shape` serves only when no record has one; records of different shapes are an error); and
    nclass and class_names as given, unless a label written lies outside them; and the keys of
    `extra_meta` as given (e.g. filter_dataset.py's `class_map`).
    """

    def __init__(self, path, shape, nclass=None, class_names=None, overwrite=True, extra_meta=None):
        self.path = os.path.abspath(path)
        self.shape = tuple(int(x) for x in shape)
        self.nclass = nclass if nclass is not None else (len(class_names) if class_names else None)
        self.class_names = list(class_names) if class_names else None
        self.overwrite = overwrite
        self.extra_meta = dict(extra_meta or {})
        self.count = 0
        self.label_counts = {}
        self._written_shape = None
        self._writer = None
        self._stack = None

    def __enter__(self):
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_output(self.path, overwrite=self.overwrite))
            self._writer = tf.io.TFRecordWriter(tmp)
            stack.push(self._close)
            self._stack = stack.pop_all()
        return self

    def write(self, png, label, source=None):
        self.write_serialized(make_example(png, label, source), label)

    def write_serialized(self, example, label):
        shape = png_shape(example)
        if shape is not None and shape != self._written_shape:
            if self._written_shape is not None:
                raise UserError(
                    f'cannot write {self.path}: record {self.count} holds a {_dims(shape)} image, '
                    f'the records before it {_dims(self._written_shape)}: an input holds images of '
                    'another shape than its metadata file says; delete that .json file (the input '
                    'is then scanned) or recreate the input.')
            self._written_shape = shape
        self._writer.write(example)
        self.count += 1
        label = int(label)
        self.label_counts[label] = self.label_counts.get(label, 0) + 1
        if not self.count % 4096:
            check_interrupted()

    def _close(self, exc_type, exc, tb):
        """Closes the file inside atomic_output (a failing final flush removes the temporary);
        on success, also removes the old metadata file before the new record file takes the old
        one's place."""
        try:
            self._writer.close()
        except Exception:
            if exc_type is None:
                raise
        if exc_type is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(meta_path(self.path))
        return False

    def __exit__(self, exc_type, exc, tb):
        self._stack.__exit__(exc_type, exc, tb)  # the record file is in place, or removed
        if exc_type is None:
            write_json(meta_path(self.path), self.meta())
        return False

    def meta(self):
        shape = self._written_shape or self.shape
        if shape != self.shape:
            logging.warning('%s holds %s images, not %s as its input said: its metadata says %s.',
                            self.path, _dims(shape), _dims(self.shape), _dims(shape))
        nclass, names = self.nclass, self.class_names
        top = max(self.label_counts, default=-1) + 1
        if nclass is not None and top > nclass:
            logging.warning('%s holds label %d, outside the %d classes its input said; its '
                            'metadata says %d classes%s.', self.path, top - 1, nclass, top,
                            ', without class names' if names else '')
            nclass, names = top, None
        return {**self.extra_meta,
                'count': self.count, 'height': shape[0], 'width': shape[1], 'channels': shape[2],
                'nclass': nclass, 'class_names': names,
                'label_counts': {str(k): v for k, v in sorted(self.label_counts.items())}}


def _dims(shape):
    return 'x'.join(map(str, shape))


def read_meta(path, hint='create it with scripts/create_datasets.py or scripts/create_split.py.'):
    """Facts of a record file (see the module doc), from its metadata file, checked.

    Scans the record file when it has no metadata file, or one older than itself (written for an
    earlier file of that name: a run stopped between the two files, or a file replaced by hand).
    """
    require_file(path, hint)
    mpath = meta_path(path)
    if os.path.exists(mpath) and os.stat(mpath).st_mtime_ns >= os.stat(path).st_mtime_ns:
        fix = (f'delete it (then {os.path.basename(path)} is scanned instead) or recreate '
               f'{os.path.basename(path)}: {hint}')
        meta = read_json(mpath, 'metadata file', fix)
        problem = _meta_problem(meta)
        if problem:
            raise UserError(f'metadata file {mpath} is not valid ({problem}); {fix}')
        return meta
    if os.path.exists(mpath):
        logging.warning('%s is older than %s, so it describes an earlier file: scanning the file.',
                        mpath, path)
    else:
        logging.warning('%s has no metadata file %s: scanning it once.', path, mpath)
    counts, count, shape = {}, 0, None
    for batch in read_records(path):
        if shape is None and len(batch['image']):
            shape = tuple(tf.io.decode_image(batch['image'][0]).shape)
        for label in batch['label']:
            counts[int(label)] = counts.get(int(label), 0) + 1
        count += len(batch['label'])
    if shape is None:
        raise UserError(f'{path} holds no records.')
    labeled = [k for k in counts if k >= 0]
    return {'count': count, 'height': shape[0], 'width': shape[1], 'channels': shape[2],
            'nclass': max(labeled) + 1 if labeled else None, 'class_names': None,
            'label_counts': {str(k): v for k, v in sorted(counts.items())}}


def _meta_problem(meta):
    """What makes a parsed metadata file unusable (see the module doc for its form), or None."""
    def whole(value, low):
        return isinstance(value, int) and not isinstance(value, bool) and value >= low

    if not isinstance(meta, dict):
        return f'it holds a JSON {type(meta).__name__}, not an object'
    for key in ('count', 'height', 'width', 'channels'):
        if key not in meta:
            return f'"{key}" is missing'
    for key, low in (('count', 0), ('height', 1), ('width', 1), ('channels', 1), ('nclass', 1)):
        value = meta.get(key)
        if not whole(value, low) and not (key == 'nclass' and value is None):
            return f'"{key}" is {json.dumps(value)}, not a whole number >= {low}'
    if meta['channels'] > 4:
        return f'"channels" is {meta["channels"]}, not 1 to 4'
    nclass, names, counts = meta.get('nclass'), meta.get('class_names'), meta.get('label_counts')
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return '"class_names" is not a list of names'
        if nclass is not None and len(names) != nclass:
            return f'"class_names" lists {len(names)} names but "nclass" is {nclass}'
    if counts is not None:
        if not isinstance(counts, dict) or not all(
                re.fullmatch(r'-?\d+', k) and whole(v, 0) for k, v in counts.items()):
            return '"label_counts" is not of the form {"label": count}'
        outside = [int(k) for k in counts if int(k) < -1 or (nclass and int(k) >= nclass)]
        if outside:
            return f'"label_counts" has label {outside[0]}, ' + (
                f'outside -1..{nclass - 1}' if nclass else 'below -1')
        if sum(counts.values()) != meta['count']:
            return f'"label_counts" add up to {sum(counts.values())}, not "count" {meta["count"]}'
    return None


def read_records(path, batch_size=1024):
    """Yields batches of a record file as numpy: {'raw', 'image', 'label', 'source'}.

    'raw' is the serialized record (to copy it without re-encoding), 'image' its PNG bytes.
    """
    ds = tf.data.TFRecordDataset(path, buffer_size=8 << 20).batch(batch_size)
    ds = ds.map(lambda raw: dict(parse_records(raw), raw=raw),
                num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    size = 0
    try:
        for batch in ds.as_numpy_iterator():
            check_interrupted()
            size += sum(len(r) for r in batch['raw']) + RECORD_OVERHEAD * len(batch['raw'])
            yield batch
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        raise UserError(f'{path} is not a valid record file ({e.message.splitlines()[0]}); '
                        'create it again.') from None
    check_complete(path, size)


# Bytes of a TFRecord file around each record: its length (8), the length's CRC (4), the data's
# CRC (4). TensorFlow's reader silently ends at a record cut short, so the records' sizes are
# summed and compared with the file's to tell a truncated file from a shorter one.
RECORD_OVERHEAD = 16


def check_complete(path, records_size):
    """Raises a UserError if the records read from `path` (`records_size` bytes, with their
    framing) do not make up the whole file: the file was cut short."""
    actual = os.path.getsize(path)
    if records_size != actual:
        raise UserError(f'{path} is cut short ({actual - records_size} bytes at its end are not a '
                        'complete record); create it again.')
