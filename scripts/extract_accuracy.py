#!/usr/bin/env python3
"""Median test accuracy of a run's last evaluations -> RUN_FOLDER/stats/accuracy.json.

Usage: scripts/extract_accuracy.py RUN_FOLDER
  e.g. scripts/extract_accuracy.py experiments/cifar10.3@250-5000/RealMix_archresnet_.../

Reads the `accuracy_test` scalars (one per evaluation, step = images seen) from every
TensorBoard event file under RUN_FOLDER/tf with TensorFlow's event reader. A resumed run has
several event files and may have evaluated the same step twice (before and after a crash): each
step counts once, its newest value (latest wall time) wins. Evaluations are ordered by step.

Writes {"last01": a, "last10": b, "last20": c, "last50": d}: the median of the last 1, 10, 20 and
50 evaluations (a run with fewer evaluations uses all it has; e.g. with 7, last10 = last20 =
last50 = the median of the 7), in the units logged (percent), and prints it.
"""
import json
import sys
import os

from absl import flags

from libml.utils import UserError, run
from libml.files import write_json

FLAGS = flags.FLAGS
flags.DEFINE_string('tag', 'accuracy_test', 'Scalar summary tag to summarise.')


def main(argv):
    if len(argv) != 2:
        raise UserError('expected one argument, the run folder, e.g. '
                        'scripts/extract_accuracy.py experiments/cifar10.3@250-5000/RealMix_.../')
    run_folder = os.path.normpath(os.path.expanduser(argv[1]))
    if not os.path.isdir(run_folder):
        what = 'is not a folder' if os.path.exists(run_folder) else 'does not exist'
        raise UserError(f'run folder {run_folder} {what}.')
    if os.path.basename(run_folder) == 'tf' and not os.path.isdir(os.path.join(run_folder, 'tf')):
        run_folder = os.path.dirname(run_folder)  # RUN/tf given: the run is its parent
    from libml import events  # imports TensorFlow: after the checks, so mistakes show at once
    files = events.event_files(run_folder)
    if not files:
        raise UserError(f'no TensorBoard event files (events.out.tfevents.*) under {run_folder}: '
                        'give the folder of one run, e.g. experiments/DATASET/RealMix_.../')
    by_step, truncated, tags = events.read_scalars(files, FLAGS.tag)
    if truncated:
        print(f'note: {truncated} event file(s) end with an incomplete record (a run stopped while '
              'writing); their complete records were used.', file=sys.stderr)
    if not by_step:
        seen = ', '.join(sorted(tags)[:12]) or 'none'
        raise UserError(f'no {FLAGS.tag} values in the {len(files)} event file(s) under '
                        f'{run_folder} (tags present: {seen}); a run logs {FLAGS.tag} after each '
                        'evaluation.')
    values = [by_step[s] for s in sorted(by_step)]
    stats = events.medians(values)
    path = os.path.join(run_folder, 'stats', 'accuracy.json')
    write_json(path, stats)
    print(json.dumps(stats, indent=2, sort_keys=True))
    print(f'{len(values)} evaluations (last at {max(by_step)} images); written to {path}')


if __name__ == '__main__':
    run(main)
