#!/usr/bin/env python3
"""Keeps the records of some classes of a record file (class-mismatch experiments, README 2.3).

    python filter_dataset.py --class_filter=2,3,4,5,6,7 \\
        --filter_dataset=$ML_DATA/SSL/cifar10.1@250-label.tfrecord \\
        --save_name=$ML_DATA/SSL/cifar6.1@250-label.tfrecord

- Labels are kept unchanged (cifar6 keeps the labels 2..7 and the ten class names of cifar10), so
  a model's outputs still mean the classes of the original data set.
- Records keep their order. The first records of a split's unlabelled file are class-interleaved,
  so after filtering they still are, among the classes kept.
- The unlabelled file of a CIFAR/SVHN split keeps the true label of every image (create_split.py
  copies records as they are), which is what the README's mismatch recipe filters on: e.g.
  `--class_filter=0,1,8,9` on cifar10.1@250-unlabel keeps only images of classes absent from
  cifar6's labelled set.
- A record without a label (-1: the images of a custom `unlabeled/` folder) belongs to no class,
  so no class filter can select it: it is dropped unless --keep_unlabeled is given.
- --save_name is the output path, used as given (the original prefixed it with $ML_DATA/SSL a
  second time). An existing output is replaced; the new file appears only once complete, with its
  metadata file beside it.
- The README's recipe also needs the test file of the new data set, made the same way:
  `--filter_dataset=$ML_DATA/cifar10-test.tfrecord --save_name=$ML_DATA/cifar6-test.tfrecord`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import libml  # noqa: E402,F401  (sets TensorFlow's environment defaults before TF is imported)
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from tqdm import tqdm  # noqa: E402

from libml import names, records, utils  # noqa: E402
from libml.utils import UserError  # noqa: E402

flags.DEFINE_string('class_filter', None, 'Comma-separated class indices to keep, e.g. '
                    '2,3,4,5,6,7.')
flags.DEFINE_string('filter_dataset', None, 'The record file to filter (a path).')
flags.DEFINE_string('save_name', None, 'The output record file (a path, used as given).')
flags.DEFINE_bool('keep_unlabeled', False, 'Also keep records without a label (-1), which belong '
                  'to no class and are otherwise dropped.')

FLAGS = flags.FLAGS


def parse_class_filter(text, nclass=None):
    """'2,3,4' -> [2, 3, 4] (sorted, unique); checks each index against `nclass` when known."""
    try:
        classes = sorted({int(x) for x in (text or '').split(',') if x.strip()})
    except ValueError:
        raise UserError(f'--class_filter={text!r} must be comma-separated class indices, '
                        'e.g. --class_filter=2,3,4,5,6,7.') from None
    if not classes:
        raise UserError('--class_filter is required: the class indices to keep, e.g. 2,3,4,5,6,7.')
    bad = [c for c in classes if c < 0 or (nclass is not None and c >= nclass)]
    if bad:
        limit = f'0..{nclass - 1}' if nclass is not None else '0 or more'
        raise UserError(f'--class_filter={text}: class {bad[0]} does not exist (the data has '
                        f'classes {limit}).')
    return classes


def filter_records(source, target, class_filter, keep_unlabeled=False, quiet=False):
    """Writes the records of `source` whose label is in `class_filter` to `target`.

    class_filter: '2,3,4' or a list of ints. Returns (records kept, records read).
    """
    if not source:
        raise UserError('--filter_dataset is required: the record file to filter.')
    if not target:
        raise UserError('--save_name is required: the output record file.')
    if class_filter is None:  # --class_filter not given: parse_class_filter says it is required
        class_filter = ''
    elif not isinstance(class_filter, str):
        class_filter = ','.join(map(str, class_filter))
    parse_class_filter(class_filter)  # a malformed filter is reported before any file is read
    if os.path.abspath(source) == os.path.abspath(target) or (
            os.path.exists(source) and os.path.exists(target) and os.path.samefile(source, target)):
        raise UserError(f'--save_name={target} is the input file; choose another output name.')
    meta = records.read_meta(source, names.creation_hint(source))
    classes = parse_class_filter(class_filter, meta.get('nclass'))
    keep = np.array(classes + ([-1] if keep_unlabeled else []), np.int64)
    what = f'a label in {classes}' + (' or no label' if keep_unlabeled else '')
    # Check the metadata first, so "nothing kept" fails before the file is read.
    counts = {int(k): v for k, v in (meta.get('label_counts') or {}).items()}
    if counts and not sum(counts.get(int(c), 0) for c in keep):
        hint = ' (add --keep_unlabeled to keep records without a label)' if -1 in counts else ''
        raise UserError(f'no record of {source} has {what} (its labels: '
                        f'{sorted(counts)}); nothing written{hint}.')
    shape = (meta['height'], meta['width'], meta['channels'])
    import tensorflow  # noqa: F401  (loaded before the progress bar starts, so its rate is right)
    with tqdm(total=meta['count'], unit='rec', desc='filter', disable=quiet) as bar, \
            records.RecordWriter(target, shape, nclass=meta.get('nclass'),
                              class_names=meta.get('class_names')) as writer:
        read = 0
        for batch in records.read_records(source):
            mask = np.isin(batch['label'], keep)
            for raw, label in zip(batch['raw'][mask].tolist(), batch['label'][mask].tolist()):
                writer.write_serialized(raw, label)
            read += len(mask)
            bar.update(len(mask))
        if not writer.count:
            # Raised inside the writer, so the empty output is discarded.
            raise UserError(f'no record of {source} has {what}; nothing written.')
    return writer.count, read


def main(argv):
    utils.no_extra_args(argv, 'usage: filter_dataset.py --class_filter=2,3 --filter_dataset=IN '
                              '--save_name=OUT')
    kept, total = filter_records(FLAGS.filter_dataset, FLAGS.save_name, FLAGS.class_filter,
                                 FLAGS.keep_unlabeled)
    print(f'wrote {os.path.abspath(FLAGS.save_name)}: {kept} of {total} records '
          f'(classes {FLAGS.class_filter}{" and unlabelled" if FLAGS.keep_unlabeled else ""})')


if __name__ == '__main__':
    utils.run(main)
