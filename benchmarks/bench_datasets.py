#!/usr/bin/env python3
"""Throughput and memory of dataset creation: create_datasets.py cifar10 and create_split.py.

    python benchmarks/bench_datasets.py [--n=10000] [--split_copies=1,4,8] [--workdir=DIR]

1. Makes N training and N/5 test images of 32x32x3 smooth noise (bilinear up-sampling of random
   5x5 images plus mild pixel noise: they compress about like photos, unlike white noise) and
   writes them as a CIFAR-10 archive, `cifar-10-python.tar.gz` (cifar-10-batches-py/data_batch_1..5,
   test_batch, batches.meta: the pickles of the real archive, b'data' uint8 [n, 3072] and
   b'labels'), into a temporary --archive_dir.
2. Measures, in one run:
   (a) the floor: a bare loop of tf.io.encode_png over the same images (every conversion must
       encode each image once), and for reference libml.records.encode_png (tf.data, parallel);
   (b) `scripts/create_datasets.py cifar10 --archive_dir=...`, end to end, as records/s over the
       train and test records: `in-process` is the script's run after Python and TensorFlow are
       loaded (a wrapper imports TensorFlow, then runs the script with runpy), `wall` the whole
       subprocess including that import;
   (c) `scripts/create_split.py --seed=1 --label_split_size=250` on the training file given 1, 4
       and 8 times (as copies: the same file twice is refused), records/s and the child's peak
       RSS (ru_maxrss from os.wait4, taken by a small launcher process, see LAUNCHER), to show
       that memory does not grow with the input.
   and prints a table with the ratio of each throughput to the floor (goal: >= 0.5).
"""
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)
import numpy as np
from absl import flags

from libml import names, utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_integer('n', 10000, 'Training images (the test set has n/5).', lower_bound=250)
flags.DEFINE_string('split_copies', '1,4,8', 'Input sizes of create_split, in copies of the '
                    'training file.')
flags.DEFINE_string('workdir', None, 'Where to write (default: a temporary folder, removed).')

FLAGS = flags.FLAGS
GOAL = 0.5
NAMES = [b'airplane', b'automobile', b'bird', b'cat', b'deer', b'dog', b'frog', b'horse',
         b'ship', b'truck']

# Runs a script as __main__ after importing TensorFlow, and reports how long each part took: the
# script's own time is then measured without the fixed cost of loading TensorFlow.
WRAPPER = r'''
import json, os, runpy, sys, time
t0 = time.perf_counter()
sys.path.insert(0, os.environ['BENCH_REPO'])
import libml, tensorflow
t1, c1 = time.perf_counter(), time.process_time()
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
except SystemExit as e:
    code = e.code or 0
t2, c2 = time.perf_counter(), time.process_time()
with open(os.environ['BENCH_TIMES'], 'w') as f:
    json.dump({'import': t1 - t0, 'run': t2 - t1, 'run_cpu': c2 - c1}, f)
sys.exit(code)
'''

# Starts WRAPPER and reports its wall time and peak RSS from os.wait4. It is a separate small
# process because Linux counts a child's memory before exec in its peak RSS: a child forked
# straight from this process (which holds TensorFlow and the images) would report our size.
LAUNCHER = r'''
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
with open(os.environ['BENCH_USAGE'], 'w') as f:
    json.dump({'wall': time.perf_counter() - start, 'maxrss_kb': usage.ru_maxrss,
               'cpu': usage.ru_utime + usage.ru_stime}, f)
sys.exit(os.waitstatus_to_exitcode(status))
'''


def smooth_images(n, seed=0, chunk=2000):
    """n uint8 images 32x32x3: bilinear up-sampling of random 5x5 images, plus noise (sigma 4)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 4, 32)
    i0 = np.minimum(x.astype(int), 3)
    w = x - i0
    up = np.zeros((32, 5), np.float32)
    up[np.arange(32), i0] = 1 - w
    up[np.arange(32), i0 + 1] += w
    out = np.empty((n, 32, 32, 3), np.uint8)
    for s in range(0, n, chunk):
        low = rng.integers(0, 256, (min(chunk, n - s), 5, 5, 3)).astype(np.float32)
        img = np.einsum('hi,nijc,wj->nhwc', up, low, up) + rng.normal(0, 4, (len(low), 32, 32, 3))
        out[s:s + len(low)] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return out


def write_cifar_archive(path, train, train_labels, test, test_labels):
    """A cifar-10-python.tar.gz with the real archive's layout and pickle format."""
    def batch(images, labels, name):
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # planar R, G, B rows
        return pickle.dumps({b'batch_label': name.encode(), b'labels': [int(x) for x in labels],
                             b'data': rows,
                             b'filenames': [b'%d.png' % i for i in range(len(rows))]}, protocol=2)

    members = {}
    for i, part in enumerate(np.array_split(np.arange(len(train)), 5)):
        members[f'data_batch_{i + 1}'] = batch(train[part], train_labels[part],
                                               f'training batch {i + 1} of 5')
    members['test_batch'] = batch(test, test_labels, 'testing batch 1 of 1')
    members['batches.meta'] = pickle.dumps({b'label_names': NAMES, b'num_vis': 3072,
                                            b'num_cases_per_batch': len(train) // 5}, protocol=2)
    with tarfile.open(path, 'w:gz') as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(f'cifar-10-batches-py/{name}')
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def run_child(script, args, ml_data, workdir):
    """Runs a script through LAUNCHER and WRAPPER.

    Returns {'wall', 'cpu'}: the whole subprocess, {'run', 'run_cpu'}: the script after TensorFlow
    is loaded, 'import': that load, in seconds, and 'rss': the peak RSS in MB.
    """
    times, usage = os.path.join(workdir, 'times.json'), os.path.join(workdir, 'usage.json')
    env = dict(os.environ, ML_DATA=ml_data, BENCH_REPO=REPO, BENCH_TIMES=times, BENCH_USAGE=usage,
               TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='')
    out, err = os.path.join(workdir, 'child.out'), os.path.join(workdir, 'child.err')
    with open(out, 'w') as fo, open(err, 'w') as fe:
        code = subprocess.call([sys.executable, '-c', LAUNCHER, sys.executable, '-c', WRAPPER,
                                os.path.join(REPO, script), *args],
                               cwd=REPO, env=env, stdout=fo, stderr=fe)
    if code:
        tail = open(err).read()[-2000:]
        raise utils.UserError(f'{script} {" ".join(args)} failed (exit {code}):\n{tail}')
    result = dict(json.load(open(times)), **json.load(open(usage)))
    result['rss'] = result.pop('maxrss_kb') / 1024
    return result


def main(argv):
    utils.no_extra_args(argv)
    copies = [int(c) for c in FLAGS.split_copies.split(',')]
    n, n_test = FLAGS.n, FLAGS.n // 5
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix='bench_datasets-')
    os.makedirs(workdir, exist_ok=True)
    ml_data = os.path.join(workdir, 'ml_data')
    archive_dir = os.path.join(workdir, 'archives')
    os.makedirs(archive_dir, exist_ok=True)
    try:
        rng = np.random.default_rng(1)
        images = smooth_images(n + n_test)
        labels = rng.integers(0, 10, n + n_test)
        write_cifar_archive(os.path.join(archive_dir, 'cifar-10-python.tar.gz'),
                            images[:n], labels[:n], images[n:], labels[n:])

        import tensorflow as tf
        total = n + n_test
        tf.io.encode_png(images[0])  # warm-up: first-call op setup is not per-image work

        def timed(fn):
            """(wall s, CPU s of this process, result) of fn()."""
            wall, cpu = time.perf_counter(), time.process_time()
            result = fn()
            return time.perf_counter() - wall, time.process_time() - cpu, result

        def encode_loop():
            return [len(tf.io.encode_png(img).numpy()) for img in images]

        load_before = os.getloadavg()[0]
        floor_before = timed(encode_loop)
        sizes = floor_before[2]
        parallel = timed(lambda: records.encode_png(images))
        # rows: (step, records, wall s, CPU s, peak RSS MB or None)
        rows = [('(a) libml.records.encode_png (tf.data, parallel)', total, *parallel[:2], None)]
        r = run_child('scripts/create_datasets.py', ['cifar10', f'--archive_dir={archive_dir}'],
                      ml_data, workdir)
        imp = r['import']
        rows.append(('(b) create_datasets.py cifar10, in-process', total, r['run'], r['run_cpu'],
                     r['rss']))
        rows.append(('(b) create_datasets.py cifar10, wall', total, r['wall'], r['cpu'], None))

        train = names.record_path('cifar10', 'train', ml_data)
        rss_by_size = []
        for k in copies:
            inputs = []
            for j in range(k):  # copies, not one path k times (create_split refuses repeats)
                copy = os.path.join(ml_data, f'copy{j}.tfrecord')
                if not os.path.exists(copy):
                    shutil.copyfile(train, copy)
                    shutil.copyfile(names.meta_path(train), names.meta_path(copy))
                inputs.append(copy)
            records = n * k
            r = run_child('scripts/create_split.py',
                          ['--seed=1', '--label_split_size=250',
                           os.path.join(ml_data, 'SSL', f'bench{k}x'), *inputs], ml_data, workdir)
            rows.append((f'(c) create_split.py, {records} records, in-process', records, r['run'],
                         r['run_cpu'], r['rss']))
            rows.append((f'(c) create_split.py, {records} records, wall', records, r['wall'],
                         r['cpu'], None))
            rss_by_size.append((records, r['rss']))

        # The floor is measured before and after the scripts and averaged: on a shared machine
        # the load changes during the run, and both ends bracket it.
        floor_after = timed(encode_loop)
        rows[:0] = [('(a) tf.io.encode_png loop (floor), before', total, *floor_before[:2], None),
                    ('(a) tf.io.encode_png loop (floor), after', total, *floor_after[:2], None)]
        floor = total / ((floor_before[0] + floor_after[0]) / 2)
        floor_cpu = total / ((floor_before[1] + floor_after[1]) / 2)
        print(f'{n} train + {n_test} test images, 32x32x3 smooth noise, mean PNG '
              f'{np.mean(sizes):.0f} bytes; TensorFlow import in a child: {imp:.1f} s; '
              f'{os.cpu_count()} CPUs, load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}')
        print(f'{"step":50s} {"records":>7s} {"wall s":>7s} {"rec/s":>7s} {"vs floor":>8s} '
              f'{"CPU s":>7s} {"rec/CPU-s":>9s} {"vs floor":>8s} {"peak RSS":>9s}')
        for name, count, wall, cpu, rss in rows:
            print(f'{name:50s} {count:7d} {wall:7.2f} {count / wall:7.0f} '
                  f'{count / wall / floor:7.2f}x {cpu:7.2f} {count / cpu:9.0f} '
                  f'{count / cpu / floor_cpu:7.2f}x {"" if rss is None else f"{rss:6.0f} MB":>9s}')
        print(f'vs floor: rate / the floor measured before and after ({floor:.0f} rec/s, '
              f'{floor_cpu:.0f} rec/CPU-s); goal: >= {GOAL} for the in-process rows. On a busy '
              'machine trust the CPU columns: wall rates depend on what else runs.')
        base = rss_by_size[0]
        for records, rss in rss_by_size[1:]:
            print(f'create_split peak RSS: {records // base[0]}x the input ({records} records) '
                  f'-> {rss / base[1]:.2f}x the memory ({rss:.0f} vs {base[1]:.0f} MB)')
    finally:
        if not FLAGS.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    utils.run(main)
