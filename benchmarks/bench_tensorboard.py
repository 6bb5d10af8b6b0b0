#!/usr/bin/env python3
"""What TensorBoard's images and histograms cost a training run (README 3.1; libml/summaries.py).

    ML_DATA=... benchmarks/bench_tensorboard.py [--dataset=digits.1@50-200] [--train_kimg=16]
        [--report_kimg=2] [--repeats=2] [--workdir=DIR]

Trains RealMix with the digits benchmark's settings (benchmarks/compare.py: DIGITS_FLAGS) with
and without --image_summaries, alternating, `--repeats` times each, every run in a new folder, and
prints for each setting the training time (the runs' own `monitors/period_seconds` and
`monitors/period_cpu_seconds`, summed: training and evaluation, without process start-up) and the
size of its event files. The digits benchmark evaluates 8 times in 128 kimg; the default here also
evaluates 8 times (16 kimg, every 2), so the event files are those of a 128-kimg run and the
measured overhead is about 8x what it is at 128 kimg. Side-by-side totals are noisy on a shared
machine, so the images' and histograms' own cost is also timed directly, in this process: one
evaluation's pictures and histogram of the digits test set, and the start's input grids.
The collapse monitors' scalars are computed in the training step in both settings.
"""
import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from compare import DIGITS_FLAGS  # beside this script (a script's folder starts sys.path)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_TIMING_REPEATS = 5


def parse():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--dataset', default='digits.1@50-200', help='an existing split under $ML_DATA')
    p.add_argument('--train_kimg', type=int, default=16)
    p.add_argument('--report_kimg', type=int, default=2)
    p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--workdir', default=None, help='run folders (default: a temporary folder, '
                   'removed at the end)')
    args = p.parse_args()
    for name in ('train_kimg', 'report_kimg', 'repeats'):
        if getattr(args, name) < 1:
            p.error(f'--{name}={getattr(args, name)} must be at least 1')
    return args


def train(args, folder, images):
    """One run; returns (wall s, CPU s) summed over its report periods, and its tf/ bytes."""
    from libml import events
    command = [sys.executable, 'realmix.py', f'--dataset={args.dataset}', f'--train_dir={folder}',
               f'--train_kimg={args.train_kimg}', f'--report_kimg={args.report_kimg}',
               f'--save_kimg={args.train_kimg}', *DIGITS_FLAGS,
               '--image_summaries' if images else '--noimage_summaries']
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f'error: {" ".join(command)} failed:\n{done.stderr[-2000:]}')
    (run,) = glob.glob(os.path.join(folder, '*', '*', 'tf'))
    files = events.event_files(os.path.dirname(run))
    wall = sum(events.read_scalars(files, 'monitors/period_seconds')[0].values())
    cpu = sum(events.read_scalars(files, 'monitors/period_cpu_seconds')[0].values())
    return wall, cpu, sum(os.path.getsize(f) for f in files)


def direct_cost(dataset):
    """CPU seconds of this process for one evaluation's images + histogram, and for the start's
    input grids (CPU time: other processes on the machine barely change it)."""
    import numpy as np
    import tensorflow as tf
    from libml import datasets, summaries
    ds = datasets.resolve(dataset)
    pixels, labels = ds.eval_sets()['test']
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(ds.nclass) * 0.3, len(labels))  # about half wrong
    writer = tf.summary.create_file_writer(tempfile.mkdtemp())
    batch = {'x': pixels[:32], 'u': np.stack([pixels[:32]] * 2)}
    times = {'evaluation': [], 'start': []}
    with writer.as_default(step=0):
        for _ in range(TINY_TIMING_REPEATS):   # the median leaves out the first (imports)
            start = time.process_time()
            summaries.write_evaluation_images(pixels, labels, probs, ds.class_names)
            summaries.write_collapse(rng.random(ds.nclass))
            times['evaluation'].append(time.process_time() - start)
            start = time.process_time()
            summaries.write_inputs(batch, ('weak', 'weak'))
            times['start'].append(time.process_time() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    args = parse()
    from libml.utils import UserError
    try:
        cost = direct_cost(args.dataset)  # first: it also checks that the dataset exists
    except UserError as e:
        sys.exit(f'error: {e}')
    root = args.workdir or tempfile.mkdtemp(prefix='bench_tensorboard_')
    load = os.getloadavg()[0]
    results = {True: [], False: []}
    try:
        for repeat in range(args.repeats):
            for images in ((True, False) if repeat % 2 == 0 else (False, True)):
                folder = os.path.join(root, f'{"on" if images else "off"}{repeat}')
                shutil.rmtree(folder, ignore_errors=True)
                results[images].append(train(args, folder, images))
                wall, cpu, size = results[images][-1]
                print(f'  images {"on " if images else "off"} run {repeat + 1}: {wall:7.1f} s wall '
                      f'{cpu:7.1f} s CPU  events {size / 1e6:.2f} MB', flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    evaluations = -(-args.train_kimg // args.report_kimg)
    print(f'\nRealMix on {args.dataset}, {args.train_kimg} kimg, {evaluations} evaluations '
          f'({" ".join(DIGITS_FLAGS)}); {cpu_model()}, {os.cpu_count()} CPUs, load average '
          f'{load:.1f} -> {os.getloadavg()[0]:.1f}')
    med = {k: [statistics.median(r[i] for r in v) for i in range(3)] for k, v in results.items()}
    for label, i in (('wall', 0), ('CPU', 1)):
        on, off = med[True][i], med[False][i]
        print(f'  {label:4s} seconds, median of {args.repeats}: images on {on:.1f}, off {off:.1f}: '
              f'{100 * (on / off - 1):+.1f}% (side by side; noise: the spread of the runs above)')
    per_run = cost['evaluation'] * evaluations + cost['start']
    train_s = med[False][1]   # CPU seconds, as the direct cost
    print(f'  direct, CPU time: one evaluation\'s images and histogram '
          f'{1000 * cost["evaluation"]:.0f} ms, the start\'s input grids '
          f'{1000 * cost["start"]:.0f} ms; {per_run:.1f} s per run = '
          f'{100 * per_run / train_s:.2f}% of this run\'s training CPU time; at 128 kimg (8 '
          f'evaluations, {128 / args.train_kimg:g}x the steps): '
          f'{100 * per_run / (train_s * 128 / args.train_kimg):.2f}% (goal: under 2%)')
    print(f'  event files: {med[True][2] / 1e6:.2f} MB with images, {med[False][2] / 1e6:.2f} MB '
          f'without, for {evaluations} evaluations (the 128-kimg digits run has 8; goal: under '
          '20 MB)')


def cpu_model():
    with open('/proc/cpuinfo') as f:
        names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    return names[0] if names else 'unknown CPU'


if __name__ == '__main__':
    main()
