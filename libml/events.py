"""TensorFlow event files of a run: reading a scalar tag across resumed runs, and its medians
(scripts/extract_accuracy.py, benchmarks/compare.py)."""
import glob
import os

import numpy as np
import tensorflow as tf


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
    return {f'last{n:02d}': float(np.median(values[-n:])) for n in WINDOWS}
