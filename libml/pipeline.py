"""Input streams of the trainer (tf.data): reading the parts of a dataset (libml/datasets.py),
and the batches of a training step.

Every random choice of the input (epoch order, augmentation, MixUp draws) is a function of
(seed, images seen), never of iterator state, so a run restarted from a checkpoint taken after
`start` images continues exactly where it stopped: epoch `e` of a file is the same permutation
whenever it is made (shuffle seeded by (seed, e)), and batch `k` is augmented with seeds derived
from (seed, k). No iterator state goes into checkpoints.
"""
import contextlib

import numpy as np
import tensorflow as tf

from libml import augment as augment_lib
from libml import names, randaugment, records
from libml.utils import UserError, check_interrupted

# Decoded images up to this size are cached in memory; larger sets are decoded every epoch.
CACHE_LIMIT_BYTES = 3 << 30
# Shuffle buffer: whole epochs are permuted exactly up to this many records.
SHUFFLE_LIMIT = 1 << 17
AUTOTUNE = tf.data.AUTOTUNE


# ----------------------------------------------------------------------------------------------
# Reading.

# For the functions given to tf.data: they are plain tensor code (Python `if`s only on Python
# values), so AutoGraph, which tf.data applies by default, would only add seconds to every start.
_plain = tf.autograph.experimental.do_not_convert


def _decoder(shape):
    def decode(record):
        image = tf.io.decode_png(record['image'], channels=shape[2])
        return {'image': tf.ensure_shape(image, shape), 'label': record['label']}
    return decode


def part_records(part, shape):
    """Decoded records of a part, in file order: {'image': uint8 [H, W, C], 'label': int64}."""
    ds = tf.data.TFRecordDataset(part.path, buffer_size=8 << 20)
    if part.stop is not None:
        ds = ds.take(part.stop)
    ds = ds.enumerate().batch(1024)

    def parse(position, raw):
        parsed = records.parse_records(raw)
        origin = tf.where(parsed['source'] >= 0, parsed['source'], position)
        return {'image': parsed['image'], 'label': parsed['label'], 'origin': origin}

    ds = ds.map(_plain(parse), num_parallel_calls=AUTOTUNE).unbatch()
    if part.exclude_below:
        ds = ds.filter(lambda r: r['origin'] >= part.exclude_below)
    if part.labeled_only:
        ds = ds.filter(lambda r: r['label'] >= 0)
    return ds.map(_plain(_decoder(shape)), num_parallel_calls=AUTOTUNE)


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


def check_records(part):
    """Reads every record of `part`'s file without decoding it (checksums are verified), checks
    that they make up the whole file and that their count is its metadata's (`part.count`): a
    truncated or damaged file fails before training, named. I/O-bound: about a second per GB."""
    path = part.path
    def count_and_size(total, raw):
        return total + tf.stack([1, tf.cast(tf.strings.length(raw), tf.int64)])

    with dataset_errors(path):
        count, size = tf.data.TFRecordDataset(path, buffer_size=8 << 20).reduce(
            tf.zeros([2], tf.int64), count_and_size).numpy()
    records.check_complete(path, int(size) + records.RECORD_OVERHEAD * int(count))
    if count != part.count:
        raise UserError(f'{path} holds {count} records but its metadata says {part.count}: the '
                        'file was cut short or changed; create it again.')


def check_stream(part, shape, what, dataset_name, whole_file=False):
    """A one-line error if `part` yields no example (training would spin forever), or (with
    `whole_file`) if its file is damaged: every record's checksum is read, not only the first."""
    if whole_file:
        check_records(part)
    with dataset_errors(part.path):
        empty = not list(part_records(part, shape).take(1))
    if empty:
        kept = (f' once the records derived from the {part.exclude_below} validation images are '
                'left out' if part.exclude_below else '')
        raise UserError(f'--dataset={dataset_name}: no {what} training images are left in '
                        f'{part.path}{kept}; use a smaller -VALID or another file.')


def load_arrays(part, shape, limit=None):
    """A whole part (or its first `limit` records) in memory: (uint8 images [N, H, W, C], int64
    labels [N]) numpy arrays."""
    images, labels = [], []
    ds = part_records(part, shape)
    if limit is not None:
        ds = ds.take(limit)
    with dataset_errors(part.path):
        for batch in ds.batch(1024).prefetch(2).as_numpy_iterator():
            check_interrupted()
            images.append(batch['image'])
            labels.append(batch['label'])
    if not images and part.labeled_only:
        raise UserError(f'the first {part.stop} records of {part.path} are all out of '
                        'distribution (label -1), so none can validate; use a larger -VALID.')
    if not images:
        raise UserError(f'{part.path} holds no usable records.')
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
    ds = part_records(part, shape)
    if part.count * shape[0] * shape[1] * shape[2] < CACHE_LIMIT_BYTES:
        ds = ds.cache()
    return repeat_shuffled(ds, seed, start)


def train_batches(dataset, batch, nu, augment, seed, start_nimg, draw=None,
                  replicas=(0,), num_replicas=1, uratio=1, views=None):
    """Batches of training steps from step `start_nimg // batch` on.

    One element per step: {'x': uint8 [b, H, W, C], 'label': int64 [b],
    'u': uint8 [nu, U, H, W, C] (when nu > 0), 'u_label': int64 [U] (when nu > 0 and the
    unlabeled file's labels are all known: for monitoring only), 'draws': draw(seed, b) (when
    given)}, where b = batch // num_replicas and U = uratio * b: the unlabeled batch holds
    `uratio` unlabeled images per labeled one, each seen as `nu` views. `views` (default: nu
    times 'weak') says how each view is augmented: 'weak' = the preset `augment`, 'strong' = the
    preset, then RandAugment and cutout (randaugment.strong). With several replicas, the elements of
    one step are the slices of the global batch for `replicas` (this worker's replica ids), one
    after the other, so a mirrored run trains on exactly the examples of a one-device run.
    """
    if batch % num_replicas:
        raise UserError(f'--batch={batch} must be divisible by the {num_replicas} replicas.')
    views = tuple(views or ('weak',) * nu)
    if len(views) != nu or set(views) - {'weak', 'strong'}:
        raise ValueError(f'views={views}: expected {nu} of "weak" or "strong".')
    local = batch // num_replicas
    names.check_preset(augment)
    shape = dataset.shape
    step0 = start_nimg // batch
    steps = tf.data.Dataset.range(step0, 1 << 62)
    labeled = training_stream(dataset.labeled, shape, seed, step0 * batch)
    streams = [labeled.batch(batch, drop_remainder=True)]
    if nu:
        unlabeled = training_stream(dataset.unlabeled, shape, seed + 1, step0 * batch * uratio)
        streams.append(unlabeled.batch(batch * uratio, drop_remainder=True))
    view_fns = {'weak': augment_lib.augment, 'strong': randaugment.strong}
    u_labels = nu and dataset.unlabeled.labels_known

    def one_replica(step, replica, x, u):
        lo, ulo = replica * local, replica * local * uratio
        key = tf.stack([tf.constant(seed, tf.int64), step * num_replicas + replica])
        keys = tf.random.experimental.stateless_split(key, nu + 2)
        out = {'x': augment_lib.augment(x['image'][lo:lo + local], augment, keys[0]),
               'label': x['label'][lo:lo + local]}
        if nu:
            images = u['image'][ulo:ulo + local * uratio]
            out['u'] = tf.stack([view_fns[v](images, augment, keys[1 + i])
                                 for i, v in enumerate(views)])
        if u_labels:
            out['u_label'] = u['label'][ulo:ulo + local * uratio]
        if draw is not None:
            out['draws'] = draw(keys[nu + 1], local)
        return out

    def make(step, x, u=None):
        parts = [one_replica(step, r, x, u) for r in replicas]
        if len(parts) == 1:
            return parts[0]
        return tf.nest.map_structure(lambda *t: tf.stack(t), *parts)

    ds = tf.data.Dataset.zip((steps, *streams)).map(_plain(make), num_parallel_calls=AUTOTUNE)
    if len(replicas) > 1:
        ds = ds.unbatch()
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(AUTOTUNE)
