"""Input streams of the trainer (tf.data): what a dataset name means, and the batches of a step.

Every random choice of the input (epoch order, augmentation, MixUp draws) is a function of
(seed, images seen), never of iterator state, so a run restarted from a checkpoint taken after
`start` images continues exactly where it stopped: epoch `e` of a file is the same permutation
whenever it is made (shuffle seeded by (seed, e)), and batch `k` is augmented with seeds derived
from (seed, k). No iterator state goes into checkpoints.

Data layout of a semi-supervised dataset `{name}.{seed}@{size}-{valid}` (see libml/data.py):
  labelled   = $ML_DATA/SSL/{name}.{seed}@{size}-label.tfrecord (all of it)
  validation = the first `valid` records of .../{name}.{seed}@{size}-unlabel.tfrecord
  unlabelled = the other records of that file, except those derived from a validation image
               (a record's `source` feature, or its position when it has none, is < valid)
  test       = $ML_DATA/{name}-test.tfrecord, or that of the dataset it derives from
               ({name}_aug{N} -> {name})
A class-mismatch dataset ({name}_mismatch{N}, README 2.3) validates on the records with a label
among the first `valid`: its out-of-distribution images (label -1) have no class of the model, so
they are never validation images (nor training ones, being among the first `valid`).
"""
import contextlib
import dataclasses
import os
from typing import Optional

import tensorflow as tf

from libml import augment as augment_lib
from libml import data
from libml.utils import UserError

# Decoded images up to this size are cached in memory; larger sets are decoded every epoch.
CACHE_LIMIT_BYTES = 3 << 30
# Shuffle buffer: whole epochs are permuted exactly up to this many records.
SHUFFLE_LIMIT = 1 << 17
AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass
class Part:
    """Records of one file used for one purpose.

    Records at positions >= `stop` are not read (None: read all). With `exclude_below` > 0,
    records whose origin (the `source` feature, else the position) is below it are dropped. With
    `labelled_only`, records without a label (-1) are dropped.
    """
    path: str
    stop: Optional[int] = None
    exclude_below: int = 0
    labelled_only: bool = False


@dataclasses.dataclass
class Dataset:
    """What the trainer reads: the parts and the facts of the data."""
    name: str
    labelled: Part
    unlabelled: Optional[Part]
    valid: Optional[Part]
    test: Part
    height: int
    width: int
    channels: int
    nclass: int
    class_names: Optional[list]

    @property
    def shape(self):
        return (self.height, self.width, self.channels)


def _meta(path):
    return data.read_meta(path, data.creation_hint(path))


def _dataset_facts(name, label_meta, nclass_flag, class_names):
    nclass = label_meta.get('nclass')
    if class_names and nclass and len(class_names) != nclass:
        raise UserError(f'dataset {name} has {nclass} classes but its class mapping names '
                        f'{len(class_names)}.')
    nclass = nclass or (len(class_names) if class_names else None)
    if nclass_flag and nclass and nclass_flag != nclass:
        raise UserError(f'--nclass={nclass_flag} disagrees with the data: {name} has {nclass} '
                        'classes. Drop the flag (it is read from the data).')
    nclass = nclass or nclass_flag
    if not nclass:
        raise UserError(f'cannot tell the class count of {name}; pass --nclass.')
    return nclass


def _check_img_size(name, meta, img_size):
    if img_size and (img_size != meta['height'] or img_size != meta['width']):
        raise UserError(f'--img_size={img_size} disagrees with the data: {name} holds '
                        f'{meta["height"]}x{meta["width"]} images. Drop the flag (it is read '
                        'from the data).')


def ssl_dataset(name, nclass=0, img_size=0, class_names=None, root=None):
    """The semi-supervised dataset `{name}.{seed}@{size}-{valid}` (see the module doc)."""
    split = data.parse_ssl_name(name)
    label_path = data.find_label_file(split, root)
    unlabel_path = data.split_path(split.stem, 'unlabel', root)
    label_meta, unlabel_meta = _meta(label_path), _meta(unlabel_path)
    if split.valid >= unlabel_meta['count']:
        raise UserError(f'--dataset={name}: {split.valid} validation images requested but '
                        f'{unlabel_path} holds {unlabel_meta["count"]} records; use a smaller -VALID.')
    test_path = data.find_test_file(split.name, root)
    test_meta = _meta(test_path)
    _check_img_size(name, label_meta, img_size)
    for path, meta in ((unlabel_path, unlabel_meta), (test_path, test_meta)):
        if (meta['height'], meta['width'], meta['channels']) != (
                label_meta['height'], label_meta['width'], label_meta['channels']):
            raise UserError(f'{path} holds {meta["height"]}x{meta["width"]}x{meta["channels"]} '
                            f'images but {label_path} holds {label_meta["height"]}x'
                            f'{label_meta["width"]}x{label_meta["channels"]}; recreate one of them.')
    class_names = class_names or label_meta.get('class_names') or data.read_class_names(split.name, root)
    nclass = _dataset_facts(name, label_meta, nclass, class_names)
    return Dataset(
        name=name, labelled=Part(label_path),
        unlabelled=Part(unlabel_path, exclude_below=split.valid),
        valid=Part(unlabel_path, stop=split.valid, labelled_only=data.is_mismatch(split.name))
        if split.valid else None,
        test=Part(test_path), height=label_meta['height'], width=label_meta['width'],
        channels=label_meta['channels'], nclass=nclass, class_names=class_names)


def supervised_dataset(name, train_record, test_record, nclass=0, img_size=0, class_names=None,
                       root=None):
    """`{name}-{valid}` for the supervised baselines: validation = the first `valid` records of
    the train file, training = the rest. Record paths are absolute or relative to $ML_DATA."""
    base, valid = data.parse_supervised_name(name)
    root = root or data.ml_data()
    train_path = os.path.join(root, train_record or f'{base}-train.tfrecord')
    test_path = os.path.join(root, test_record or f'{base}-test.tfrecord')
    for flag, given, path in (('--train_record', train_record, train_path),
                              ('--test_record', test_record, test_path)):
        if given:  # a folder or an unreadable file is named with the flag that gave it
            data.require_file(path, data.creation_hint(path), f'{flag}={given}')
    train_meta, test_meta = _meta(train_path), _meta(test_path)
    if valid >= train_meta['count']:
        raise UserError(f'--dataset={name}: {valid} validation images requested but {train_path} '
                        f'holds {train_meta["count"]} records; use a smaller -VALID.')
    _check_img_size(name, train_meta, img_size)
    class_names = class_names or train_meta.get('class_names') or data.read_class_names(base, root)
    nclass = _dataset_facts(name, train_meta, nclass, class_names)
    return Dataset(
        name=name, labelled=Part(train_path, exclude_below=valid), unlabelled=None,
        valid=Part(train_path, stop=valid) if valid else None, test=Part(test_path),
        height=train_meta['height'], width=train_meta['width'], channels=train_meta['channels'],
        nclass=nclass, class_names=class_names)


# ----------------------------------------------------------------------------------------------
# Reading.

def _decoder(shape):
    def decode(record):
        image = tf.io.decode_png(record['image'], channels=shape[2])
        return {'image': tf.ensure_shape(image, shape), 'label': record['label']}
    return decode


def records(part, shape):
    """Decoded records of a part, in file order: {'image': uint8 [H, W, C], 'label': int64}."""
    ds = tf.data.TFRecordDataset(part.path, buffer_size=8 << 20)
    if part.stop is not None:
        ds = ds.take(part.stop)
    ds = ds.enumerate().batch(1024)

    def parse(position, raw):
        parsed = data.parse_records(raw)
        origin = tf.where(parsed['source'] >= 0, parsed['source'], position)
        return {'image': parsed['image'], 'label': parsed['label'], 'origin': origin}

    ds = ds.map(parse, num_parallel_calls=AUTOTUNE).unbatch()
    if part.exclude_below:
        ds = ds.filter(lambda r: r['origin'] >= part.exclude_below)
    if part.labelled_only:
        ds = ds.filter(lambda r: r['label'] >= 0)
    return ds.map(_decoder(shape), num_parallel_calls=AUTOTUNE)


@contextlib.contextmanager
def dataset_errors(*paths):
    """Turns a damaged record file met while reading `paths` (a truncated file, a bad checksum, an
    image that is not a PNG) into a one-line UserError naming the file(s)."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        message = e.message.splitlines()[0][:200]
        named = [p for p in paths if p in e.message] or paths
        raise UserError(f'{" or ".join(named)} could not be read ({message}); the file is damaged: '
                        'create it again.') from None


def check_records(path):
    """Reads every record of `path` without decoding it (checksums are verified), checks that
    they make up the whole file and that their count is its metadata's: a truncated or damaged
    file fails before training, named. I/O-bound: about a second per GB."""
    def count_and_size(total, raw):
        return total + tf.stack([1, tf.cast(tf.strings.length(raw), tf.int64)])

    with dataset_errors(path):
        count, size = tf.data.TFRecordDataset(path, buffer_size=8 << 20).reduce(
            tf.zeros([2], tf.int64), count_and_size).numpy()
    data.check_complete(path, int(size) + data.RECORD_OVERHEAD * int(count))
    expected = _meta(path)['count']
    if count != expected:
        raise UserError(f'{path} holds {count} records but its metadata says {expected}: the file '
                        'was cut short or changed; create it again.')


def load_arrays(part, shape, limit=None):
    """A whole part (or its first `limit` records) in memory: (uint8 images [N, H, W, C], int64
    labels [N]) numpy arrays."""
    images, labels = [], []
    ds = records(part, shape)
    if limit is not None:
        ds = ds.take(limit)
    with dataset_errors(part.path):
        for batch in ds.batch(1024).prefetch(2).as_numpy_iterator():
            images.append(batch['image'])
            labels.append(batch['label'])
    if not images and part.labelled_only:
        raise UserError(f'the first {part.stop} records of {part.path} are all out of '
                        'distribution (label -1), so none can validate; use a larger -VALID.')
    if not images:
        raise UserError(f'{part.path} holds no usable records.')
    import numpy as np
    return np.concatenate(images), np.concatenate(labels)


def _count(ds):
    return int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def repeat_shuffled(ds, seed, start, count=None):
    """An endless stream of epochs of `ds`, epoch e shuffled with seed (seed, e), from element `start`.

    `count` (elements per epoch) is only needed, and counted when not given, if start > 0.
    """
    seed = tf.constant(seed, tf.int64)
    if start:
        count = count or _count(ds)
    epoch0, skip = divmod(start, count) if start else (0, 0)
    buffer = SHUFFLE_LIMIT if count is None else min(count, SHUFFLE_LIMIT)

    def epoch(e):
        return ds.shuffle(buffer, seed=seed * 1000003 + e, reshuffle_each_iteration=False)

    return tf.data.Dataset.range(epoch0, 1 << 62).flat_map(epoch).skip(skip)


def training_stream(part, shape, seed, start):
    """Decoded records of `part`, endlessly, shuffled per epoch, from element `start`."""
    ds = records(part, shape)
    meta = _meta(part.path)
    if meta['count'] * shape[0] * shape[1] * shape[2] < CACHE_LIMIT_BYTES:
        ds = ds.cache()
    return repeat_shuffled(ds, seed, start)


def train_batches(dataset, batch, nu, augment, seed, start_images, draw=None,
                  replicas=(0,), num_replicas=1):
    """Batches of training steps from step `start_images // batch` on.

    One element per step: {'x': uint8 [b, H, W, C], 'label': int64 [b],
    'u': uint8 [nu, b, H, W, C] (when nu > 0), 'draws': draw(seed, b) (when given)}, where
    b = batch // num_replicas. With several replicas, the elements of one step are the slices of
    the global batch for `replicas` (this worker's replica ids), one after the other, so a
    mirrored run trains on exactly the examples of a one-device run.
    """
    if batch % num_replicas:
        raise UserError(f'--batch={batch} must be divisible by the {num_replicas} replicas.')
    local = batch // num_replicas
    augment_lib.check_preset(augment)
    shape = dataset.shape
    step0 = start_images // batch
    steps = tf.data.Dataset.range(step0, 1 << 62)
    labelled = training_stream(dataset.labelled, shape, seed, step0 * batch)
    streams = [labelled.batch(batch, drop_remainder=True)]
    if nu:
        unlabelled = training_stream(dataset.unlabelled, shape, seed + 1, step0 * batch)
        streams.append(unlabelled.batch(batch, drop_remainder=True))

    def one_replica(step, replica, x, u):
        lo = replica * local
        key = tf.stack([tf.constant(seed, tf.int64), step * num_replicas + replica])
        keys = tf.random.experimental.stateless_split(key, nu + 2)
        out = {'x': augment_lib.augment(x['image'][lo:lo + local], augment, keys[0]),
               'label': x['label'][lo:lo + local]}
        if nu:
            out['u'] = tf.stack([augment_lib.augment(u['image'][lo:lo + local], augment, keys[1 + i])
                                 for i in range(nu)])
        if draw is not None:
            out['draws'] = draw(keys[nu + 1], local)
        return out

    def make(step, x, u=None):
        parts = [one_replica(step, r, x, u) for r in replicas]
        if len(parts) == 1:
            return parts[0]
        return tf.nest.map_structure(lambda *t: tf.stack(t), *parts)

    ds = tf.data.Dataset.zip((steps, *streams)).map(make, num_parallel_calls=AUTOTUNE)
    if len(replicas) > 1:
        ds = ds.unbatch()
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(AUTOTUNE)
