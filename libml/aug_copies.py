"""Augmented copies of a split's unlabeled images (scripts/make_aug_copy.py; the script's --help
says what it writes and why validation images stay out of training).

How: tf.data parses, augments and PNG-encodes batches of AUG_BATCH records in parallel, so memory
does not grow with the number of copies or the data. Each original is decoded once into a
temporary file of raw pixels beside the output, which every copy pass reads back. A copy
identical to its original (cutout leaves 70% of the images alone) keeps the original PNG bytes.
The augmentation of each batch is seeded from (seed, copy index, batch index).
"""
import math
import os
import time

import tensorflow as tf
from tqdm import tqdm

from libml import augment as augment_lib
from libml import records
from libml.utils import UserError
from libml.files import temporary_name

AUG_BATCH = 256  # records per batch; fixed, so the outputs depend only on the flags


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
    def parse(batch_index, raw):
        r = records.parse_records(raw)
        index = batch_index * AUG_BATCH + tf.range(tf.size(raw, out_type=tf.int64))
        return {'png': r['image'], 'label': r['label'], 'index': index,
                'source': tf.where(r['source'] >= 0, r['source'], index)}

    ds = tf.data.TFRecordDataset(path, buffer_size=8 << 20).batch(AUG_BATCH).enumerate()
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def originals_pipeline(path, shape):
    """The original records with their source, and their decoded pixels (for the copies)."""
    def decode(png):
        return tf.ensure_shape(tf.io.decode_png(png, channels=shape[2]), shape)

    def prepare(b):
        return {'record': records.serialize_records(b['png'], b['label'], b['source']),
                'label': b['label'],
                'pixels': tf.map_fn(decode, b['png'], fn_output_signature=tf.uint8)}

    return _records(path).map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(4)


def copies_pipeline(path, pixels_path, shape, preset, copies, valid, seed):
    """Records of copy 1 of every image, copy 2, ... copy N (without the first `valid` images)."""
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


def write_unlabel_file(unlabel_in, unlabel_out, shape, preset, nclass, class_names, count, total,
                       copies, valid, seed):
    """Writes the new unlabeled file: the originals, then the copies.

    Returns the wall and CPU seconds of the copies (after the originals).
    """
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
            ds = copies_pipeline(unlabel_in, pixels_path, shape, preset, copies, valid, seed)
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
