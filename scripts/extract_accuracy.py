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
import glob
import json
import os
import sys

from absl import flags

from libml.utils import UserError, run, write_json

FLAGS = flags.FLAGS
flags.DEFINE_string('tag', 'accuracy_test', 'Scalar summary tag to summarise.')

WINDOWS = (1, 10, 20, 50)


def event_files(run_folder):
    """Event files of a run: under RUN/tf (any depth), else anywhere under RUN; sorted."""
    for root in (os.path.join(run_folder, 'tf'), run_folder):
        found = sorted(glob.glob(os.path.join(glob.escape(root), '**', 'events.out.tfevents.*'),
                                 recursive=True))
        if found:
            return found
    return []


def read_scalars(files, tag):
    """{step: value} of `tag` over `files`; a step logged more than once keeps its newest value.

    Returns (values by step, number of truncated files, set of tags seen).
    """
    import tensorflow as tf  # imported only once the arguments are known to be usable

    newest = {}  # step -> (wall_time, order read, value)
    tags, truncated, order = set(), 0, 0
    for path in files:
        try:
            # TFRecordDataset + the Event proto: summary_iterator is deprecated (and says so).
            for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
                event = tf.compat.v1.Event.FromString(record)
                for value in event.summary.value:
                    tags.add(value.tag)
                    if value.tag != tag:
                        continue
                    if value.HasField('tensor'):
                        number = float(tf.make_ndarray(value.tensor))
                    else:  # a TF1 run (simple_value)
                        number = float(value.simple_value)
                    order += 1
                    key = (event.wall_time, order)
                    if event.step not in newest or key >= newest[event.step][:2]:
                        newest[event.step] = (event.wall_time, order, number)
        except tf.errors.DataLossError:  # a run killed while writing: keep what was complete
            truncated += 1
    return {step: v[2] for step, v in newest.items()}, truncated, tags


def medians(values):
    """{'last01': ..., 'last50': ...} of values in evaluation order (see the module doc)."""
    import numpy as np
    return {f'last{n:02d}': float(np.median(values[-n:])) for n in WINDOWS}


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
    files = event_files(run_folder)
    if not files:
        raise UserError(f'no TensorBoard event files (events.out.tfevents.*) under {run_folder}: '
                        'give the folder of one run, e.g. experiments/DATASET/RealMix_.../')
    by_step, truncated, tags = read_scalars(files, FLAGS.tag)
    if truncated:
        print(f'note: {truncated} event file(s) end with an incomplete record (a run stopped while '
              'writing); their complete records were used.', file=sys.stderr)
    if not by_step:
        seen = ', '.join(sorted(tags)[:12]) or 'none'
        raise UserError(f'no {FLAGS.tag} values in the {len(files)} event file(s) under '
                        f'{run_folder} (tags present: {seen}); a run logs {FLAGS.tag} after each '
                        'evaluation.')
    values = [by_step[s] for s in sorted(by_step)]
    stats = medians(values)
    path = os.path.join(run_folder, 'stats', 'accuracy.json')
    write_json(path, stats)
    print(json.dumps(stats, indent=2, sort_keys=True))
    print(f'{len(values)} evaluations (last at {max(by_step)} images); written to {path}')


if __name__ == '__main__':
    run(main)
