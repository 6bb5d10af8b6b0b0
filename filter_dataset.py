#!/usr/bin/env python3
"""Keeps the records of some classes of a record file (class-mismatch experiments, README 2.3).

    python filter_dataset.py --class_filter=2,3,4,5,6,7 \\
        --filter_dataset=$ML_DATA/SSL/cifar10.1@250-label.tfrecord \\
        --save_name=$ML_DATA/SSL/cifar6.1@250-label.tfrecord

- Labels are renumbered (--relabel, the default): the classes of the model (--in_distribution)
  become 0..K-1 in increasing order, so a model trained on cifar6 has 6 outputs and wastes no
  probability on classes it never sees. The output's metadata has K classes, the names of those
  classes, and `class_map` (old label -> new label); an output named like a dataset
  (`{name}-test.tfrecord`, `SSL/{name}.{seed}@{size}-label.tfrecord`, ...) also gets
  `{name}_class_mappings.json` beside it ($ML_DATA), so per-class accuracy names the real classes.
- A kept class that is not a class of the model is out of distribution: its records get the label
  -1 (no class), so they train as unlabeled images and are never counted in an accuracy.
- The classes of the model: --in_distribution if given; else, for an output of a class-mismatch
  dataset `{name}_mismatch{N}` (README 2.3), those recorded for `{name}` when its label (or test)
  file was filtered, which must therefore be filtered first (the README's order); else
  --class_filter itself. So README 2.3's commands, run in order as written, give cifar6 six
  classes, and `--class_filter=0,1,6,7` on the unlabeled file maps 6 -> 4, 7 -> 5, 0 and 1 -> -1.
- --norelabel keeps every label as it is (the original's behaviour: cifar6 keeps the labels 2..7
  and the ten class names of cifar10, and a model has 10 outputs).
- Records keep their order. The first records of a split's unlabeled file are class-interleaved,
  so after filtering they still are, among the classes kept.
- The unlabeled file of a CIFAR/SVHN split keeps the true label of every image (create_split.py
  copies records as they are), which is what the README's mismatch recipe filters on: e.g.
  `--class_filter=0,1,8,9` on cifar10.1@250-unlabel keeps only images of classes absent from
  cifar6's labeled set.
- A record without a label (-1: the images of a custom `unlabeled/` folder) belongs to no class,
  so no class filter can select it: it is dropped unless --keep_unlabeled is given.
- --save_name is the output path, used as given (the original prefixed it with $ML_DATA/SSL a
  second time). An existing output is replaced; the new file appears only once complete, with its
  metadata file beside it.
- The README's recipe also needs the test file of the new data set, made the same way:
  `--filter_dataset=$ML_DATA/cifar10-test.tfrecord --save_name=$ML_DATA/cifar6-test.tfrecord`.
"""
import os

from absl import flags

from libml import class_filter, records, utils

flags.DEFINE_string('class_filter', None, 'Comma-separated class indices to keep, e.g. '
                    '2,3,4,5,6,7.')
flags.DEFINE_string('filter_dataset', None, 'The record file to filter (a path).')
flags.DEFINE_string('save_name', None, 'The output record file (a path, used as given).')
flags.DEFINE_bool('keep_unlabeled', False, 'Also keep records without a label (-1), which belong '
                  'to no class and are otherwise dropped.')
flags.DEFINE_bool('relabel', True, 'Number the classes of the model (--in_distribution) 0..K-1, '
                  'give the other kept classes the label -1 (out of distribution) and record the '
                  'mapping; --norelabel keeps every label as it is (the original\'s behaviour).')
flags.DEFINE_string('in_distribution', None, 'With --relabel: the classes of the model, as indices '
                    'of the input, e.g. 2,3,4,5,6,7. Default: for an output of {name}_mismatch{N}, '
                    'the classes recorded when {name}\'s label or test file was filtered; else '
                    '--class_filter.')

FLAGS = flags.FLAGS


def main(argv):
    utils.no_extra_args(argv, 'usage: filter_dataset.py --class_filter=2,3 --filter_dataset=IN '
                              '--save_name=OUT')
    kept, total = class_filter.filter_records(FLAGS.filter_dataset, FLAGS.save_name, FLAGS.class_filter,
                                 FLAGS.keep_unlabeled, relabel=FLAGS.relabel,
                                 in_distribution=FLAGS.in_distribution)
    class_map = records.read_meta(FLAGS.save_name).get('class_map')
    if class_map:
        ood = [c for c, k in class_map.items() if k < 0]
        labels = ', '.join(f'{c}->{k}' for c, k in class_map.items() if k >= 0)
        how = '; '.join(([f'labels {labels}'] if labels else [])
                        + ([f'{",".join(ood)} out of distribution (-1)'] if ood else []))
    else:
        how = 'labels kept'
    print(f'wrote {os.path.abspath(FLAGS.save_name)}: {kept} of {total} records '
          f'(classes {FLAGS.class_filter}{" and unlabeled" if FLAGS.keep_unlabeled else ""}; '
          f'{how})')


if __name__ == '__main__':
    utils.run(main)
