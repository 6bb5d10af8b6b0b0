#!/usr/bin/env python3
"""Throughput and memory of dataset creation: create_datasets.py cifar10 and create_split.py, or
create_datasets.py custom over a folder of images.

    python benchmarks/bench_datasets.py [--n=10000] [--split_copies=1,4,8] [--workdir=DIR]
    python benchmarks/bench_datasets.py --folder=DIR [--rounds=1] [--workdir=DIR]

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

With --folder=DIR (DIR/train and DIR/test hold one sub-folder of images per class, e.g. CIFAR-10
unpacked to JPEG files), it measures instead, in one run, `scripts/create_datasets.py custom
--traindir=DIR/train --testdir=DIR/test` beside the yardstick NAIVE: one process that opens and
converts each image with Pillow, encodes it with tf.io.encode_png (the encoder whose bytes the
records hold) and writes tf.train.Example records with TensorFlow's writer. Each is a whole
process (Python and TensorFlow start-up included), run in turn: naive, custom, naive, ... for
--rounds rounds, so the naive runs bracket the others as the load changes. Printed: wall and CPU
seconds (children included), the peak RSS of the main process and of all its processes (summed,
from /proc every 0.25 s: Linux only), the CPU model and the load average, and the ratio of the
custom wall time to the mean naive one (goal: <= 0.65).
"""
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)
import numpy as np
from absl import flags

from libml import names, records, utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_integer('n', 10000, 'Training images (the test set has n/5).', lower_bound=250)
flags.DEFINE_string('split_copies', '1,4,8', 'Input sizes of create_split, in copies of the '
                    'training file.')
flags.DEFINE_string('workdir', None, 'Where to write (default: a temporary folder, removed).')
flags.DEFINE_string('folder', None, 'Instead of the rows above: time create_datasets.py custom '
                    'over this folder (train/ and test/, one sub-folder of images per class) '
                    'beside a naive one-process loop over the same images.')
flags.DEFINE_integer('rounds', 1, '--folder: runs of create_datasets.py custom, each after a '
                     'naive run (one more naive run closes).', lower_bound=1)

FLAGS = flags.FLAGS
GOAL = 0.5
FOLDER_GOAL = 0.65  # custom wall time / naive wall time, at most (issue 19)
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


# The yardstick of --folder: one process, one image at a time, as a first script would do it.
NAIVE = r'''
import os, sys
import numpy as np
import tensorflow as tf
from PIL import Image
folder, out = sys.argv[1:]
count = 0
for part in ('train', 'test'):
    classes = sorted(os.listdir(os.path.join(folder, part)))
    with tf.io.TFRecordWriter(os.path.join(out, f'naive-{part}.tfrecord')) as writer:
        for label, name in enumerate(classes):
            for file in sorted(os.listdir(os.path.join(folder, part, name))):
                with Image.open(os.path.join(folder, part, name, file)) as image:
                    png = tf.io.encode_png(np.asarray(image.convert('RGB'))).numpy()
                example = tf.train.Example(features=tf.train.Features(feature={
                    'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                    'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}))
                writer.write(example.SerializeToString())
                count += 1
print(count)
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


def tree_rss(root):
    """(RSS of process `root`, RSS of it and all its descendants), in bytes, from /proc."""
    parents, rss = {}, {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                parents[int(entry)] = int(f.read().rsplit(')', 1)[1].split()[1])
            with open(f'/proc/{entry}/statm') as f:
                rss[int(entry)] = int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
    tree = {root}
    for _ in range(8):  # descendants, a generation at a time
        tree |= {pid for pid, parent in parents.items() if parent in tree}
    return rss.get(root, 0), sum(rss.get(pid, 0) for pid in tree)


def run_sampled(args, env, workdir):
    """Runs `args` from the repository root: {'wall', 'cpu' (s, its reaped children included),
    'rss', 'rss_all' (MB, peaks of tree_rss every 0.25 s), 'stdout'}."""
    out, err = os.path.join(workdir, 'child.out'), os.path.join(workdir, 'child.err')
    peak, peak_all = 0, 0
    with open(out, 'w') as fo, open(err, 'w') as fe:
        start = time.perf_counter()
        child = subprocess.Popen(args, cwd=REPO, env=env, stdout=fo, stderr=fe)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)  # rusage: only wait4 has it
            if pid:
                break
            main_rss, all_rss = tree_rss(child.pid)
            peak, peak_all = max(peak, main_rss), max(peak_all, all_rss)
            time.sleep(0.25)
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise utils.UserError(f'{" ".join(map(str, args))} failed (exit {child.returncode}):\n'
                              f'{open(err).read()[-2000:]}')
    return {'wall': wall, 'cpu': usage.ru_utime + usage.ru_stime, 'rss': peak / 2**20,
            'rss_all': peak_all / 2**20, 'stdout': open(out).read()}


def cpu_model():
    with open('/proc/cpuinfo') as f:
        names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    return names[0] if names else 'unknown CPU'


def bench_folder(folder, rounds, workdir):
    """The --folder comparison: naive loop and create_datasets.py custom, in turn."""
    for part in ('train', 'test'):
        if not os.path.isdir(os.path.join(folder, part)):
            raise utils.UserError(f'--folder={folder} has no {part}/ folder (of class folders).')
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='')
    naive = [sys.executable, '-c', NAIVE, folder]
    custom = [sys.executable, 'scripts/create_datasets.py', 'custom', '--name=bench',
              f'--traindir={os.path.join(folder, "train")}',
              f'--testdir={os.path.join(folder, "test")}']
    rows, load_before = [], os.getloadavg()
    for i in range(2 * rounds + 1):
        out = os.path.join(workdir, f'run{i}')
        os.makedirs(out)
        if i % 2 == 0:
            r = run_sampled(naive + [out], env, workdir)
            r['count'] = int(r['stdout'].split()[-1])
            rows.append(('naive loop (Pillow, tf.io.encode_png, TFRecordWriter)', r))
        else:
            r = run_sampled(custom, dict(env, ML_DATA=out), workdir)
            r['count'] = sum(int(n) for n in re.findall(r': (\d+) records', r['stdout']))
            rows.append(('scripts/create_datasets.py custom', r))
        shutil.rmtree(out)
    load_after = os.getloadavg()
    counts = {r['count'] for _, r in rows}
    if len(counts) != 1:
        raise utils.UserError(f'the runs wrote different numbers of records: {sorted(counts)}')
    print(f'{folder}: {counts.pop()} images; {cpu_model()}, {os.cpu_count()} CPUs; load average '
          f'(1 min) {load_before[0]:.2f} -> {load_after[0]:.2f}')
    print(f'{"run":56s} {"wall s":>7s} {"CPU s":>7s} {"peak RSS main / all processes":>30s}')
    for name, r in rows:
        print(f'{name:56s} {r["wall"]:7.1f} {r["cpu"]:7.1f} '
              f'{r["rss"]:14.0f} / {r["rss_all"]:6.0f} MB')
    naive_wall = np.mean([r['wall'] for name, r in rows[::2]])
    naive_cpu = np.mean([r['cpu'] for name, r in rows[::2]])
    custom_wall = np.mean([r['wall'] for name, r in rows[1::2]])
    custom_cpu = np.mean([r['cpu'] for name, r in rows[1::2]])
    print(f'create_datasets.py custom / naive loop: wall {custom_wall / naive_wall:.2f} (goal: '
          f'<= {FOLDER_GOAL}), CPU {custom_cpu / naive_cpu:.2f}; means over the runs above.')


def main(argv):
    utils.no_extra_args(argv)
    if FLAGS.folder:
        workdir = tempfile.mkdtemp(prefix='bench_folder-', dir=FLAGS.workdir)
        try:
            bench_folder(FLAGS.folder, FLAGS.rounds, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return
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
            count = n * k
            r = run_child('scripts/create_split.py',
                          ['--seed=1', '--label_split_size=250',
                           os.path.join(ml_data, 'SSL', f'bench{k}x'), *inputs], ml_data, workdir)
            rows.append((f'(c) create_split.py, {count} records, in-process', count, r['run'],
                         r['run_cpu'], r['rss']))
            rows.append((f'(c) create_split.py, {count} records, wall', count, r['wall'],
                         r['cpu'], None))
            rss_by_size.append((count, r['rss']))

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
        for count, rss in rss_by_size[1:]:
            print(f'create_split peak RSS: {count // base[0]}x the input ({count} records) '
                  f'-> {rss / base[1]:.2f}x the memory ({rss:.0f} vs {base[1]:.0f} MB)')
    finally:
        if not FLAGS.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    utils.run(main)
