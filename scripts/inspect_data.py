#!/usr/bin/env python3
"""Know a dataset before training on it: duplicates and leaks between its parts, class balance,
and (with a trained run) the class distribution and out-of-distribution share of its unlabeled
pool.

Usage: scripts/inspect_data.py DATASET [--run=RUN] [--out_dir=DIR] [--drop_leaks]
  e.g. scripts/inspect_data.py digits.1@50-200
       scripts/inspect_data.py cifar10.1@250-5000 --run=experiments/cifar10.1@250-5000/RealMix_...

DATASET: any name the trainers accept (cifar10.1@250-5000, an _aug or _mismatch dataset, the
baselines' mydataset-50), or a split or dataset without validation (cifar10.1@250, cifar10).
Parts: labeled, unlabeled (training), validation, test.

Prints, and writes into --out_dir (default inspection/DATASET; complete or not at all):
  report.json   every count below, every leak and duplicate pair (part, record position in its
                file, distance), the leaked records, the class counts, the run's estimates;
  pairs.png     the leaks side by side with their distance (closest to farthest), the closest
                pairs that are not counted, and the other duplicates;
  balance.png   the share of each class in the labeled, validation and test parts;
  confidence.png  (--run) the model's confidence on the unlabeled pool, with the threshold.
Leaks come first: test or validation images with an exact copy (equal pixels) or a near copy
(the same photo shifted, cropped, rescaled, colour-changed or re-encoded) in another part. How
near copies are found and why the threshold is 0.15: libml/inspection.py and the README section
"Inspect a dataset".

--drop_leaks writes the split {name}_noleak.{seed}@{size} under $ML_DATA/SSL (and
$ML_DATA/{name}_noleak-test.tfrecord, a hard link to the test file, plus the class mapping):
the same split without the labeled, unlabeled and validation images that have a copy among the
test images; train on {name}_noleak.{seed}@{size}-{valid}. No existing file is modified.
"""
import os
import time

from absl import flags

from libml import utils
from libml.utils import UserError

flags.DEFINE_string('run', None, 'A run folder (or its tf/ folder, or a checkpoint) trained on '
                    'this dataset: its evaluated model estimates the class distribution and the '
                    'out-of-distribution share of the unlabeled pool.')
flags.DEFINE_string('out_dir', None, 'Folder to write the report and pictures into (must not '
                    'exist, unless --overwrite). Default: inspection/DATASET.')
flags.DEFINE_bool('overwrite', False, 'Replace --out_dir if it exists (once the new one is '
                  'complete).')
flags.DEFINE_float('threshold', None, 'Near duplicates: pairs at this distance or less (1 - the '
                   'aligned band-pass correlation). Default: 0.15 for images of 32x32 pixels or '
                   'more, proportionally less for smaller ones (0.0375 at 8x8).', lower_bound=0,
                   upper_bound=2)
flags.DEFINE_float('ood_threshold', None, 'With --run: the confidence below which an unlabeled '
                   'image is flagged out of distribution. Default: the 5% quantile of the '
                   'validation images\' confidences.', lower_bound=0, upper_bound=1)
flags.DEFINE_bool('leaks_only', False, 'Compare only the test and validation images with the '
                  'others (skips the pairs within training; for very large unlabeled pools).')
flags.DEFINE_bool('drop_leaks', False, 'Also write the split {name}_noleak.{seed}@{size} without '
                  'the training and validation images that duplicate test images.')
FLAGS = flags.FLAGS

USAGE = 'usage: scripts/inspect_data.py DATASET [--run=RUN] (e.g. digits.1@50-200)'


def main(argv):
    if len(argv) != 2:
        raise UserError(f'expected one argument, the dataset; {USAGE}')
    started = time.time()
    name = argv[1]
    out_dir = FLAGS.out_dir or os.path.join('inspection', name)
    from libml import inspection  # imports TensorFlow: after the checks, so mistakes show at once
    report = inspection.inspect(name, out_dir, FLAGS.run, FLAGS.threshold, FLAGS.ood_threshold,
                                FLAGS.leaks_only, FLAGS.drop_leaks, FLAGS.overwrite)
    print('\n'.join(inspection.format_report(report)))
    out_dir = os.path.abspath(out_dir)
    pictures = ', '.join(f for f in ('pairs.png', 'balance.png', 'confidence.png')
                         if os.path.exists(os.path.join(out_dir, f)))
    print(f'\nwrote {out_dir}: report.json, {pictures}')
    if 'noleak' in report:
        noleak = report['noleak']
        print(f'wrote the split without leaks ({len(noleak["excluded_ids"])} records left out): '
              f'{noleak["files"]["label"]}, {noleak["files"]["unlabel"]}, '
              f'{noleak["files"]["map"]}, {noleak["files"]["test"]}; train with '
              f'--dataset={noleak["dataset"]}')
    print(f'{time.time() - started:.0f} s, peak memory {inspection.peak_memory_gb():.1f} GB')


if __name__ == '__main__':
    utils.run(main)
