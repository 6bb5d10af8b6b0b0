#!/usr/bin/env python3
"""Makes a split with N augmented copies of its unlabelled images (README section 1.3).

    scripts/make_aug_copy.py --aug_dataset=cifar10.1@250 --unlabel_size=49750 --aug_copy=50 \\
        --augment=cutout

reads   $ML_DATA/SSL/cifar10.1@250-{label,unlabel}.tfrecord (made by scripts/create_split.py;
            a split without a label file of its own, like README 2.3's cifar6_mismatch50.1@250,
            uses that of the split it derives from, cifar6.1@250)
writes  $ML_DATA/SSL/cifar10_aug50.1@250-label.tfrecord: the same labelled records, byte for byte
        $ML_DATA/SSL/cifar10_aug50.1@250-unlabel.tfrecord: first the original unlabelled records in
            their order, then copy 1 of every image, copy 2 of every image, ... copy N
each with its metadata file (.json). Every record of the new unlabelled file carries `source` = the
index of its original image in the old unlabelled file (originals too; a record that already has a
source keeps it), and keeps that image's label.

Validation: the trainer's `cifar10_aug50.1@250-500` validates on the first 500 records, i.e. the
same un-augmented images as `cifar10.1@250-500`, and trains on the records whose source >= 500, so
no copy of a validation image is ever trained on, whatever validation size is chosen later.
`--valid=K` only saves time and space: it does not write the copies of the first K images (they
would never be used by a run with a validation size >= K).

Test file: the trainer finds `$ML_DATA/cifar10-test.tfrecord` for `cifar10_aug50` by itself, so
nothing is copied.

Randomness: the augmentation of each batch of 256 images is seeded from (--seed, copy index,
batch index), so the same command makes the same files (--valid does not change the copies made).

Speed and memory: it streams batches through tf.data (parse, augment, PNG-encode in parallel), so
memory does not grow with N or with the data. Each original is decoded once, into a temporary file
of raw pixels beside the output (count x H x W x C bytes: 150 MB for CIFAR-10's 49,750 images),
which every copy pass reads back, and which is deleted at the end. A copy identical to its original
(cutout skips 70% of the images) keeps the original PNG bytes instead of being encoded again.

Outputs are written under temporary names and renamed when complete; the label file is written
last and marks a complete dataset. Interrupted, the command can simply be run again (it removes
what a killed run left). An existing complete dataset is an error unless --overwrite.
"""
import math
import os
import time

from absl import flags

from libml import augment as augment_lib
from libml import names, records
from libml.utils import UserError, no_extra_args, run, temporary_name

flags.DEFINE_string('aug_dataset', None,
                    'Split to augment, NAME.SEED@SIZE (e.g. cifar10.1@250): reads '
                    '$ML_DATA/SSL/NAME.SEED@SIZE-{label,unlabel}.tfrecord.')
flags.DEFINE_integer('aug_copy', 1, 'Number N of augmented copies of every unlabelled image; the '
                     'new dataset is NAME_augN.SEED@SIZE.')
flags.DEFINE_string('augment', 'cifar10', 'Augmentation of the copies: one of '
                    f'{", ".join(augment_lib.PRESETS)} (stl-10 is accepted for stl10). See '
                    'libml/augment.py.')
flags.DEFINE_integer('unlabel_size', None, 'Optional, for compatibility with the original: the '
                     'number of unlabelled images of --aug_dataset; checked against the file.')
flags.DEFINE_integer('valid', 0, 'Do not write copies of the first K unlabelled images (the '
                     'validation images of a later NAME_augN.SEED@SIZE-K run, whose copies the '
                     'trainer would drop anyway). The originals are always all kept. 0 = copy all.')
flags.DEFINE_integer('seed', 0, 'Random seed of the augmentations (the split\'s seed is part of '
                     '--aug_dataset).')
flags.DEFINE_bool('overwrite', False, 'Replace an existing augmented dataset of the same name.')
FLAGS = flags.FLAGS

AUG_BATCH = 256  # records per batch; fixed, so the outputs depend only on the flags

CREATE_HINT = ('create the split with scripts/create_split.py, e.g. scripts/create_split.py '
               '--seed={seed} --label_split_size={size} $ML_DATA/SSL/{name} '
               '$ML_DATA/{name}-train.tfrecord.')


def check_flags():
    """Everything that can be checked without TensorFlow; returns (split, preset, output stem)."""
    if not FLAGS.aug_dataset:
        raise UserError('--aug_dataset is required, e.g. --aug_dataset=cifar10.1@250.')
    split = names.parse_split_name(FLAGS.aug_dataset, '--aug_dataset')
    if FLAGS.aug_copy is None or FLAGS.aug_copy < 1:
        raise UserError(f'--aug_copy={FLAGS.aug_copy}: the number of copies must be at least 1.')
    preset = augment_lib.check_preset(FLAGS.augment)
    if FLAGS.valid < 0:
        raise UserError(f'--valid={FLAGS.valid} must be 0 or more.')
    new_name = f'{split.name}_aug{FLAGS.aug_copy}'
    return split, preset, f'{new_name}.{split.seed}@{split.size}'


def copy_label_file(src, dst, meta):
    """The label file under the new name: the same records, byte for byte, and metadata stating
    what was copied (a wrong count or shape in `meta`, the source's, is not passed on)."""
    with records.RecordWriter(dst, (meta['height'], meta['width'], meta['channels']),
                           nclass=meta.get('nclass'), class_names=meta.get('class_names')) as w:
        for batch in records.read_records(src):
            for raw, label in zip(batch['raw'].tolist(), batch['label'].tolist()):
                w.write_serialized(raw, label)


def _records(path):
    """Batches of AUG_BATCH records of `path`: png, label, source (or the index if none), index."""
    import tensorflow as tf

    def parse(batch_index, raw):
        r = records.parse_records(raw)
        index = batch_index * AUG_BATCH + tf.range(tf.size(raw, out_type=tf.int64))
        return {'png': r['image'], 'label': r['label'], 'index': index,
                'source': tf.where(r['source'] >= 0, r['source'], index)}

    ds = tf.data.TFRecordDataset(path, buffer_size=8 << 20).batch(AUG_BATCH).enumerate()
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def originals_pipeline(path, shape):
    """The original records with their source, and their decoded pixels (for the copies)."""
    import tensorflow as tf

    def decode(png):
        return tf.ensure_shape(tf.io.decode_png(png, channels=shape[2]), shape)

    def prepare(b):
        return {'record': records.serialize_records(b['png'], b['label'], b['source']),
                'label': b['label'],
                'pixels': tf.map_fn(decode, b['png'], fn_output_signature=tf.uint8)}

    return _records(path).map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(4)


def copies_pipeline(path, pixels_path, shape, preset, copies, valid, seed):
    """Records of copy 1 of every image, copy 2, ... copy N (without the first `valid` images)."""
    import tensorflow as tf
    base_seed = tf.constant([seed, 0], tf.int64)

    def pixels():
        ds = tf.data.FixedLengthRecordDataset(pixels_path, record_bytes=math.prod(shape),
                                              buffer_size=8 << 20).batch(AUG_BATCH)
        return ds.map(lambda raw: tf.reshape(tf.io.decode_raw(raw, tf.uint8), (-1,) + shape))

    def encode_changed(images, pngs, changed):
        """PNGs of the images; one that did not change keeps its original bytes (no encoding)."""
        where = tf.where(changed)
        encoded = tf.map_fn(tf.io.encode_png, tf.gather_nd(images, where),
                            fn_output_signature=tf.string)
        return tf.tensor_scatter_nd_update(pngs, where, encoded)

    def augment_batch(batch_index, b, images, copy_seed):
        aug = augment_lib.augment(images, preset,
                                  tf.random.experimental.stateless_fold_in(copy_seed, batch_index))
        changed = tf.reduce_any(tf.not_equal(aug, images), axis=[1, 2, 3])
        # Every image is augmented, so each one's draws do not depend on --valid; the first
        # `valid` are dropped before the costly encoding.
        keep = b['index'] >= valid
        aug, png, changed, label, source = (tf.boolean_mask(t, keep) for t in (
            aug, b['png'], changed, b['label'], b['source']))
        png = encode_changed(aug, png, changed)
        return {'record': records.serialize_records(png, label, source), 'label': label}

    def one_copy(copy):
        copy_seed = tf.random.experimental.stateless_fold_in(base_seed, copy)
        ds = tf.data.Dataset.zip(_records(path), pixels()).enumerate()
        return ds.map(lambda i, b: augment_batch(i, b[0], b[1], copy_seed),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return tf.data.Dataset.range(1, copies + 1).flat_map(one_copy).prefetch(4)


def write_unlabel_file(unlabel_in, unlabel_out, shape, preset, nclass, class_names, count, total):
    """Writes the new unlabelled file: the originals, then the copies.

    Returns the wall and CPU seconds of the copies (after the originals).
    """
    import tensorflow as tf
    from tqdm import tqdm
    pixels_path = temporary_name(unlabel_out, '.pixels')  # removed by a later run if killed
    try:
        with records.RecordWriter(unlabel_out, shape, nclass=nclass, class_names=class_names) as w, \
                tqdm(total=total, unit='img', desc='writing', smoothing=0.05) as bar:
            # The originals, decoding each image once into a temporary file of raw pixels.
            with open(pixels_path, 'wb') as pixels:
                for batch in originals_pipeline(unlabel_in, shape).as_numpy_iterator():
                    for record, label in zip(batch['record'], batch['label']):
                        w.write_serialized(record, label)
                    pixels.write(batch['pixels'].tobytes())
                    bar.update(len(batch['label']))
            if w.count != count:
                raise UserError(f'{unlabel_in} holds {w.count} records, not the {count} its '
                                'metadata file says; create the split again.')
            start, cpu_start = time.perf_counter(), time.process_time()
            ds = copies_pipeline(unlabel_in, pixels_path, shape, preset, FLAGS.aug_copy,
                                 FLAGS.valid, FLAGS.seed)
            for batch in ds.as_numpy_iterator():
                for record, label in zip(batch['record'], batch['label']):
                    w.write_serialized(record, label)
                bar.update(len(batch['label']))
            return time.perf_counter() - start, time.process_time() - cpu_start
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        raise UserError(f'cannot read {unlabel_in} ({e.message.splitlines()[0]}); it may be '
                        f'damaged or its images may not be {shape[0]}x{shape[1]}x{shape[2]} as '
                        'its metadata says; create the split again.') from None
    finally:
        if os.path.exists(pixels_path):
            os.remove(pixels_path)


def main(argv):
    no_extra_args(argv, 'All inputs are flags; see --help.')
    split, preset, new_stem = check_flags()
    if len(names.lineage(split.name)) > 1:  # e.g. cifar6_mismatch50 (README 2.3)
        hint = 'create it with filter_dataset.py (README 2.3) or scripts/make_aug_copy.py.'
    else:
        hint = CREATE_HINT.format(seed=split.seed, size=split.size, name=split.name)
    unlabel_in = names.require_file(names.split_path(split.stem, 'unlabel'), hint)
    label_in = names.find_label_file(split)  # a _mismatch split uses its base's label file
    label_out = names.split_path(new_stem, 'label')
    unlabel_out = names.split_path(new_stem, 'unlabel')
    if os.path.exists(label_out) and not FLAGS.overwrite:
        raise UserError(f'dataset {new_stem} exists ({label_out}); pass --overwrite to make it '
                        'again.')

    meta_l = records.read_meta(label_in)
    meta_u = records.read_meta(unlabel_in, hint)
    count = int(meta_u['count'])
    if FLAGS.unlabel_size is not None and FLAGS.unlabel_size != count:
        raise UserError(f'--unlabel_size={FLAGS.unlabel_size}, but {unlabel_in} holds {count} '
                        f'images; pass --unlabel_size={count} or leave it out.')
    if count == 0:
        raise UserError(f'{unlabel_in} holds no images to copy.')
    if FLAGS.valid >= count:
        raise UserError(f'--valid={FLAGS.valid} leaves none of the {count} unlabelled images of '
                        f'{unlabel_in} to copy; use a smaller value.')
    shape = (int(meta_u['height']), int(meta_u['width']), int(meta_u['channels']))
    if shape[2] not in (1, 3):
        raise UserError(f'{unlabel_in} holds images with {shape[2]} channels; augmentations '
                        'support 1 (grey) or 3 (colour).')
    nclass = meta_l.get('nclass') or meta_u.get('nclass')
    class_names = meta_l.get('class_names') or meta_u.get('class_names')
    copied = FLAGS.aug_copy * (count - FLAGS.valid)
    total = count + copied

    import tensorflow as tf  # noqa: F401  (after the checks: mistakes are reported at once)

    if os.path.exists(unlabel_out) and not FLAGS.overwrite:
        print(f'{unlabel_out} exists without its label file (an earlier run was interrupted): '
              'making it again.')
    copies_word = 'copy' if FLAGS.aug_copy == 1 else 'copies'
    print(f'{new_stem}: {count} original unlabelled images of {split.stem} ({shape[0]}x{shape[1]}x'
          f'{shape[2]}) + {FLAGS.aug_copy} {preset} {copies_word} of {count - FLAGS.valid} of them'
          + (f' (not of the first {FLAGS.valid}, --valid)' if FLAGS.valid else '')
          + f' = {total} records.')

    start, cpu_start = time.perf_counter(), time.process_time()
    # A full disk (the README asks for 5-10 GB) is a one-line error naming the file: the
    # writers report it (libml.utils.storage_errors).
    copy_wall, copy_cpu = write_unlabel_file(unlabel_in, unlabel_out, shape, preset, nclass,
                                             class_names, count, total)
    copy_label_file(label_in, label_out, meta_l)
    elapsed = time.perf_counter() - start

    print(f'wrote {unlabel_out} ({total} records) and {label_out} (a copy of {label_in}).')
    print(f'made {copied} augmented images in {copy_wall:.1f} s ({copied / copy_wall:.0f} '
          f'images/s, {copy_cpu:.1f} s of CPU); {elapsed:.1f} s in all.')
    new_name = new_stem.split('.')[0]
    try:
        test = names.find_test_file(new_name)
        print(f'test file: the trainer uses {test} for {new_name}; nothing to copy.')
    except UserError:
        print(f'note: no test file yet; the trainer will use '
              f'{names.record_path(names.base_name(new_name), "test")} (scripts/create_datasets.py).')
    print(f'train with --dataset={new_stem}-VALID (e.g. {new_stem}-{FLAGS.valid or 500}): '
          'validation = the first VALID original images; their copies are never trained on.')


if __name__ == '__main__':
    run(main)
