#!/usr/bin/env python3
"""Benchmark of the augmentations and of scripts/make_aug_copy.py, on 32x32x3 images.

    python benchmarks/bench_augment.py [--images=5000]

Writes a split `bench.1@250` with --images unlabeled images in a temporary $ML_DATA (synthetic
images that compress about like CIFAR-10 photos: smooth colour fields plus noise), then prints:
  (a) the PNG encoding floor: the same images through a bare tf.io.encode_png loop, and through
      the parallel tf.data encoder of libml.records.encode_png (the faster of the two is the floor);
  (b) make_aug_copy copies/s (its own in-process timing of the copies: TF import, the copy of
      the originals and the label file excluded), cutout and cifar10; goal: cutout >= 0.5 x floor;
      and CPU per copy against CPU per bare encoding (a measure that holds on a busy machine);
  (c) peak RSS of make_aug_copy at --aug_copy=2 and --aug_copy=20; goal: within 10%;
  (d) online augmentation throughput per preset: batches of 64 in a tf.data pipeline (batch,
      augment, prefetch) from decoded images in memory, and from the PNG file (parse, decode,
      batch, augment, prefetch), images/s; the trainer needs 3 x 64 augmented images per step
      (labeled + 2 unlabeled views).
The machine may be shared: timings are the best of a few repeats, and the load is printed.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_integer('images', 5000, 'Unlabeled images of the benchmark split.')
flags.DEFINE_integer('repeats', 3, 'Repeats of each timing (the best is kept).')
FLAGS = flags.FLAGS

SPLIT = 'bench.1@250'


def synthetic_images(n, size=32, seed=0):
    """Images that compress like natural photos: 4x4 colour fields upsampled, plus noise."""
    import numpy as np
    import tensorflow as tf
    rng = np.random.RandomState(seed)
    coarse = rng.uniform(0, 255, (n, 4, 4, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, [size, size], method='bilinear').numpy()
    noisy = smooth + rng.normal(0, 6, smooth.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def write_split(images):
    from libml import names, records
    pngs = records.encode_png(images)
    shape = images.shape[1:]
    with records.RecordWriter(names.split_path(SPLIT, 'label'), shape, nclass=10) as w:
        for i in range(250):
            w.write(pngs[i], i % 10)
    with records.RecordWriter(names.split_path(SPLIT, 'unlabel'), shape, nclass=10) as w:
        for i, png in enumerate(pngs):
            w.write(png, i % 10)
    return sum(len(p) for p in pngs) / len(pngs)


def best_rate(fn, count, repeats):
    """(best images/s, least CPU microseconds per image) of `fn()` processing `count` images."""
    rate, cpu = 0., float('inf')
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        rate = max(rate, count / (time.perf_counter() - start))
        cpu = min(cpu, (time.process_time() - cpu_start) / count * 1e6)
    return rate, cpu


def encode_floor(images, repeats):
    import tensorflow as tf
    from libml import records

    def loop():
        for image in images:
            tf.io.encode_png(image)

    tensors = [tf.constant(x) for x in images]

    def loop_tensors():
        for image in tensors:
            tf.io.encode_png(image)

    return {'bare tf.io.encode_png loop': best_rate(loop_tensors, len(images), repeats),
            'bare loop, numpy input': best_rate(loop, len(images), repeats),
            'parallel tf.data encode (records.encode_png)': best_rate(
                lambda: records.encode_png(images), len(images), repeats)}


def run_make_aug_copy(copies, preset):
    """Runs the script; returns (copies/s and CPU us/copy it reports, peak RSS in MiB, seconds)."""
    cmd = [sys.executable, os.path.join(REPO, 'scripts', 'make_aug_copy.py'),
           f'--aug_dataset={SPLIT}', f'--unlabel_size={FLAGS.images}', f'--aug_copy={copies}',
           f'--augment={preset}', '--overwrite']
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    start = time.perf_counter()
    with tempfile.TemporaryFile('w+') as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise SystemExit(f'make_aug_copy failed:\n{text}')
    m = re.search(r'made (\d+) augmented images in ([\d.]+) s \((\d+) images/s, '
                  r'([\d.]+) s of CPU', text)
    cpu = float(m.group(4)) / int(m.group(1)) * 1e6
    return int(m.group(3)), cpu, usage.ru_maxrss / 1024, seconds


def online_rates(images, repeats, from_file, batches=60):
    """{preset: (images/s, CPU us/image)} of batches of 64 augmented in a tf.data pipeline, from
    decoded images in memory (as a trainer that caches its data) or decoding the PNG file."""
    import tensorflow as tf
    from libml import augment, names, records
    path = names.split_path(SPLIT, 'unlabel')
    rates = {}
    for preset in names.PRESETS:
        def pipeline(preset=preset):
            if from_file:
                ds = tf.data.TFRecordDataset(path).repeat()
                ds = ds.map(lambda r: tf.io.decode_png(
                    tf.io.parse_single_example(r, records.record_features())['image'], channels=3),
                    num_parallel_calls=tf.data.AUTOTUNE)
            else:
                ds = tf.data.Dataset.from_tensor_slices(images).repeat()
            ds = ds.batch(64, drop_remainder=True).enumerate()
            ds = ds.map(lambda i, x: augment.augment(
                x, preset, tf.random.experimental.stateless_fold_in(tf.constant([7, 0]), i)),
                num_parallel_calls=tf.data.AUTOTUNE)
            return iter(ds.prefetch(4))

        it = pipeline()
        for _ in range(5):  # warm up: tracing, thread pools
            next(it)

        def run():
            for _ in range(batches):
                next(it)
        rates[preset] = best_rate(run, 64 * batches, repeats)
    return rates


def main(argv):
    del argv
    import tensorflow as tf  # noqa: F401  (imported before any timing)
    root = tempfile.mkdtemp(prefix='bench_augment_')
    os.environ['ML_DATA'] = root
    try:
        print(f'bench_augment: {FLAGS.images} images 32x32x3, {os.cpu_count()} CPUs, '
              f'load average {os.getloadavg()[0]:.1f} at start, best of {FLAGS.repeats}')
        images = synthetic_images(FLAGS.images)
        png_size = write_split(images)
        print(f'PNG size of the originals: {png_size:.0f} bytes on average\n')

        floors = encode_floor(images, FLAGS.repeats)
        floor = max(rate for rate, _ in floors.values())
        floor_cpu = min(cpu for _, cpu in floors.values())
        print('(a) PNG encoding floor                              wall images/s   CPU us/image')
        for name, (rate, cpu) in floors.items():
            print(f'    {name:45s} {rate:10.0f} {cpu:14.1f}')
        print(f'    {"floor (the best of each column)":45s} {floor:10.0f} {floor_cpu:14.1f}\n')

        print('(b) make_aug_copy copies (its in-process timing, TF import excluded); '
              'goal for cutout at --aug_copy=20: >= 0.5 x floor')
        print('                                 wall images/s  x floor   CPU us/copy  floor/CPU'
              '   command')
        results = {}
        for copies, preset in ((20, 'cutout'), (2, 'cutout'), (10, 'cifar10')):
            runs = [run_make_aug_copy(copies, preset) for _ in range(1 if copies == 20 else 2)]
            results[copies, preset] = (max(r[0] for r in runs), min(r[1] for r in runs),
                                       max(r[2] for r in runs), min(r[3] for r in runs))
        for (copies, preset), (rate, cpu, rss, seconds) in results.items():
            ok = 'every copy encoded'
            if copies == 2:
                ok = 'short run for (c): start-up (tracing) weighs more'
            elif preset == 'cutout':
                ok = 'goal ' + ('OK' if rate >= 0.5 * floor else 'MISSED')
            print(f'    --augment={preset:7s} --aug_copy={copies:<3d} {rate:8.0f} '
                  f'{rate / floor:10.2f} {cpu:12.1f} {floor_cpu / cpu:10.2f}   {seconds:5.1f} s  '
                  f'{ok}')
        print('    (x floor: wall throughput / floor; floor/CPU: CPU per encoded image / CPU per '
              'copy)\n')

        rss2, rss20 = results[2, 'cutout'][2], results[20, 'cutout'][2]
        ratio = rss20 / rss2
        print('(c) peak RSS of make_aug_copy (os.wait4 of each run)')
        print(f'    --aug_copy=2   {rss2:7.0f} MiB')
        print(f'    --aug_copy=20  {rss20:7.0f} MiB   ratio {ratio:.3f}   goal <= 1.10  '
              f'{"OK" if ratio <= 1.10 else "MISSED"}\n')

        print('(d) online augmentation in tf.data, batches of 64 (augment + prefetch), from decoded'
              ' images in memory')
        print('    and from the PNG file (parse + decode + augment); a RealMix step takes 3 x 64 '
              'images')
        print('             in memory: images/s  steps/s  CPU us/image | from file: images/s  '
              'steps/s  CPU us/image')
        cached = online_rates(images, FLAGS.repeats, from_file=False)
        from_file = online_rates(images, FLAGS.repeats, from_file=True)
        for preset in cached:
            (r1, c1), (r2, c2) = cached[preset], from_file[preset]
            print(f'    {preset:8s} {r1:18.0f} {r1 / 192:8.0f} {c1:13.1f} | {r2:18.0f} '
                  f'{r2 / 192:8.0f} {c2:13.1f}')
        print(f'\nload average {os.getloadavg()[0]:.1f} at the end')
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    app.run(main)
