#!/usr/bin/env python3
"""Makes a split with N augmented copies of its unlabeled images (README section 1.3).

    scripts/make_aug_copy.py --aug_dataset=cifar10.1@250 --unlabel_size=49750 --aug_copy=50 \\
        --augment=cutout

reads   $ML_DATA/SSL/cifar10.1@250-{label,unlabel}.tfrecord (made by scripts/create_split.py;
            a split without a label file of its own, like README 2.3's cifar6_mismatch50.1@250,
            uses that of the split it derives from, cifar6.1@250)
writes  $ML_DATA/SSL/cifar10_aug50.1@250-label.tfrecord: the same labeled records, byte for byte
        $ML_DATA/SSL/cifar10_aug50.1@250-unlabel.tfrecord: first the original unlabeled records in
            their order, then copy 1 of every image, copy 2 of every image, ... copy N
each with its metadata file (.json). Every record of the new unlabeled file carries `source` = the
index of its original image in the old unlabeled file (originals too; a record that already has a
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
import os
import time

from absl import flags

from libml import names, records
from libml.utils import UserError, no_extra_args, run

flags.DEFINE_string('aug_dataset', None,
                    'Split to augment, NAME.SEED@SIZE (e.g. cifar10.1@250): reads '
                    '$ML_DATA/SSL/NAME.SEED@SIZE-{label,unlabel}.tfrecord.')
flags.DEFINE_integer('aug_copy', 1, 'Number N of augmented copies of every unlabeled image; the '
                     'new dataset is NAME_augN.SEED@SIZE.')
flags.DEFINE_string('augment', 'cifar10', 'Augmentation of the copies: one of '
                    f'{", ".join(names.PRESETS)} (stl-10 is accepted for stl10). See '
                    'libml/augment.py.')
flags.DEFINE_integer('unlabel_size', None, 'Optional, for compatibility with the original: the '
                     'number of unlabeled images of --aug_dataset; checked against the file.')
flags.DEFINE_integer('valid', 0, 'Do not write copies of the first K unlabeled images (the '
                     'validation images of a later NAME_augN.SEED@SIZE-K run, whose copies the '
                     'trainer would drop anyway). The originals are always all kept. 0 = copy all.')
flags.DEFINE_integer('seed', 0, 'Random seed of the augmentations (the split\'s seed is part of '
                     '--aug_dataset).')
flags.DEFINE_bool('overwrite', False, 'Replace an existing augmented dataset of the same name.')
FLAGS = flags.FLAGS

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
    preset = names.check_preset(FLAGS.augment)
    if FLAGS.valid < 0:
        raise UserError(f'--valid={FLAGS.valid} must be 0 or more.')
    new_name = f'{split.name}_aug{FLAGS.aug_copy}'
    return split, preset, f'{new_name}.{split.seed}@{split.size}'


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
        raise UserError(f'--valid={FLAGS.valid} leaves none of the {count} unlabeled images of '
                        f'{unlabel_in} to copy; use a smaller value.')
    shape = (int(meta_u['height']), int(meta_u['width']), int(meta_u['channels']))
    if shape[2] not in (1, 3):
        raise UserError(f'{unlabel_in} holds images with {shape[2]} channels; augmentations '
                        'support 1 (grey) or 3 (colour).')
    nclass = meta_l.get('nclass') or meta_u.get('nclass')
    class_names = meta_l.get('class_names') or meta_u.get('class_names')
    copied = FLAGS.aug_copy * (count - FLAGS.valid)
    total = count + copied

    from libml import aug_copies  # imports TensorFlow: after the checks, so mistakes show at once

    if os.path.exists(unlabel_out) and not FLAGS.overwrite:
        print(f'{unlabel_out} exists without its label file (an earlier run was interrupted): '
              'making it again.')
    copies_word = 'copy' if FLAGS.aug_copy == 1 else 'copies'
    print(f'{new_stem}: {count} original unlabeled images of {split.stem} ({shape[0]}x{shape[1]}x'
          f'{shape[2]}) + {FLAGS.aug_copy} {preset} {copies_word} of {count - FLAGS.valid} of them'
          + (f' (not of the first {FLAGS.valid}, --valid)' if FLAGS.valid else '')
          + f' = {total} records.')

    start = time.perf_counter()
    # A full disk (the README asks for 5-10 GB) is a one-line error naming the file: the
    # writers report it (libml.utils.storage_errors).
    copy_wall, copy_cpu = aug_copies.write_unlabel_file(
        unlabel_in, unlabel_out, shape, preset, nclass, class_names, count, total,
        FLAGS.aug_copy, FLAGS.valid, FLAGS.seed)
    aug_copies.copy_label_file(label_in, label_out, meta_l)
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
