#!/usr/bin/env python3
"""Cuts a semi-supervised split `{name}.{seed}@{size}` out of labeled record files.

    scripts/create_split.py [--seed=S] --label_split_size=N [--label_size=M] [--class_balance]
                            [--overwrite] OUTPUT_PREFIX INPUT.tfrecord...

writes, for OUTPUT_PREFIX = $ML_DATA/SSL/cifar10, seed 1 and N = 250:
    $ML_DATA/SSL/cifar10.1@250-label.tfrecord    the N labeled training images
    $ML_DATA/SSL/cifar10.1@250-unlabel.tfrecord  everything else (see "Order" below)
    $ML_DATA/SSL/cifar10.1@250-map.json          which input records went where
(each record file with its metadata file `.json` beside it).

Which records are labeled
  The labeled pool is every labeled input record (label >= 0), or, with --label_size=M, the
  first M records of the inputs (custom data: `{name}-train.tfrecord` holds the M labeled
  images). N images are drawn from the pool per class, so the labeled set follows the pool's
  class distribution (largest-remainder rounding, at least one image per class), or has the same
  count per class with --class_balance. Seed 0 takes the first images of each class in file order;
  another seed draws them at random (the same seed always draws the same images).

Order of the unlabeled file
  1. the M - N held-out labeled images of the pool, class-interleaved: one image of each class in
     turn (class 0, 1, ..., K-1, 0, 1, ...; seeded random order within a class, file order with
     seed 0), so any prefix of them is as class-balanced as the pool allows;
  2. then the records outside the pool, in file order: images without a label (label -1, e.g. the
     custom `{name}-unlabeled.tfrecord`, which is read automatically when it lies beside an input
     `{name}-train.tfrecord`), and with --label_size the labeled records after the first M.
  The trainer's `{name}.{seed}@{N}-{V}` validates on the first V records of this file, so
  `mydataset.1@450-50` (M = 500) validates on exactly the 50 held-out labeled images and trains
  on the rest: an image without a label is never a validation image. CIFAR-style data has no
  records outside the pool, so `cifar10.1@250-5000` validates on 5000 class-balanced images.
  Records keep their labels as they are (the unlabeled images of CIFAR keep their true class,
  which filter_dataset.py uses to build class-mismatch experiments); the trainer ignores them.

How it works (streaming, memory) and the map JSON: libml/splits.py.
"""
import os

from absl import flags

from libml import splits, utils
from libml.utils import UserError

flags.DEFINE_integer('seed', 0, 'Random seed of the split; 0 takes the first images of each class '
                     'in file order (no shuffling).', lower_bound=0)
flags.DEFINE_integer('label_split_size', None, 'Number of labeled training images N (the @N of '
                     'the split name).', lower_bound=1)
flags.DEFINE_alias('labeled_split_size', 'label_split_size')
flags.DEFINE_alias('size', 'label_split_size')
flags.DEFINE_integer('label_size', None, 'Custom data: the first M input records are the labeled '
                     'pool; the M - N not drawn come first in the unlabeled file (the validation '
                     'candidates). Default: every labeled input record.', lower_bound=1)
flags.DEFINE_bool('class_balance', False, 'Draw the same number of labeled images from every '
                  'class (as far as the pool allows) instead of following the class distribution.')
flags.DEFINE_bool('custom', False, 'Accepted for compatibility; no longer needed: custom data is '
                  'handled by --label_size and the {name}-unlabeled.tfrecord beside the input.')
flags.DEFINE_bool('auto_unlabeled', True, 'Also read {name}-unlabeled.tfrecord when it lies beside '
                  'an input {name}-train.tfrecord (its images go to the unlabeled file, after '
                  'the held-out labeled ones).')
flags.DEFINE_bool('overwrite', False, 'Replace an existing split of the same name.')
flags.DEFINE_integer('buffer_mb', 64, 'Memory for reordering records, in MB (see --help '
                     'header); larger is not faster unless the spill file is on a slow disk.',
                     lower_bound=1)

FLAGS = flags.FLAGS

USAGE = ('usage: scripts/create_split.py [--seed=S] --label_split_size=N [--label_size=M] '
         '[--class_balance] OUTPUT_PREFIX INPUT.tfrecord... '
         '(e.g. $ML_DATA/SSL/cifar10 $ML_DATA/cifar10-train.tfrecord)')


def main(argv):
    if FLAGS.label_split_size is None:
        raise UserError(f'--label_split_size is required. {USAGE}')
    if len(argv) < 3:
        raise UserError(f'expected OUTPUT_PREFIX and at least one INPUT.tfrecord. {USAGE}')
    if argv[1].endswith('.tfrecord'):
        raise UserError(f'OUTPUT_PREFIX {argv[1]} is a record file; the prefix comes first, e.g. '
                        '$ML_DATA/SSL/cifar10 $ML_DATA/cifar10-train.tfrecord.')
    result = splits.create_split(argv[1], argv[2:], FLAGS.seed, FLAGS.label_split_size, FLAGS.label_size,
                          FLAGS.class_balance, FLAGS.overwrite, FLAGS.auto_unlabeled,
                          FLAGS.buffer_mb)
    paths, content = result['paths'], result['map']
    per_class = ', '.join(f'{c}:{n}' for c, n in content['label_counts'].items())
    print(f'wrote {paths["label"]}: {len(content["label"])} labeled images ({per_class})')
    stem = f'{content["name"]}.{content["seed"]}@{content["label_split_size"]}'
    print(f'wrote {paths["unlabel"]}: {len(content["unlabel"])} images, the first '
          f'{content["max_valid"]} held-out labeled (validation candidates: use at most '
          f'{stem}-{content["max_valid"]})')
    print(f'wrote {paths["map"]}: record ids of '
          + ', '.join(f'{os.path.basename(i["path"])} ({i["count"]})' for i in content['inputs']))


if __name__ == '__main__':
    utils.run(main)
