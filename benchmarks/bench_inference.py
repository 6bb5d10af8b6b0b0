#!/usr/bin/env python3
"""Inference throughput: a folder of PNGs end to end, with the run's checkpoint and with its
exported SavedModel and TFLite model, vs the bare model forward pass.

    benchmarks/bench_inference.py [--images=2000] [--size=32] [--batch=256] [--repeats=3]

Builds, in a temporary folder, `--images` random RGB PNGs of `--size` pixels and a run whose
checkpoint holds a WRN-28-2 (filters 32, repeat 4, scales 3, 10 classes; random weights), then
measures, on the same images and batch size:
  end to end   list_images (header checks) + parallel decode + forward, as run_inference does,
               with the model already restored and traced;
  bare forward the same traced function on the images already decoded in memory;
  SavedModel   the run exported by libml/export.py (scripts/export_model.py), loaded with
               tf.saved_model.load: serving_default on the files' bytes (read, decoded and
               resized in the graph, forward), and predict_pixels on the decoded images;
  TFLite       model.tflite in tf.lite.Interpreter: on the images decoded by the project's
               decoder in parallel (as predict_files), and on the decoded images alone;
and prints the throughputs and their ratios to the bare forward (the goal: at least 0.7). TF import, restore, the
one-off trace and tf.data's one-off start-up (about a second per process) are reported apart.
Each is measured `--repeats` times, alternating; best and median are printed, in wall-clock
time and per CPU second of the process (which barely moves when other processes share the
CPUs). Also reported: decoding alone, and one complete cold `run_inference` (restore, trace,
outputs written).
"""
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_integer('images', 2000, 'Number of PNG images.')
flags.DEFINE_integer('size', 32, 'Image height and width.')
flags.DEFINE_integer('batch', 256, 'Batch size of both measurements.')
flags.DEFINE_integer('repeats', 3, 'Measurements of each kind.')


def make_images(folder, n, size):
    import numpy as np
    from PIL import Image
    rng = np.random.RandomState(0)
    pixels = rng.randint(0, 256, (n, size, size, 3)).astype(np.uint8)

    def save(i):
        Image.fromarray(pixels[i]).save(os.path.join(folder, f'{i:05d}.png'))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(save, range(n)))


def make_run(root, size):
    import tensorflow as tf
    from libml import models, runs
    args = dict(arch='resnet', filters=32, repeat=4, scales=3, nclass=10, height=size, width=size,
                channels=3, class_names=None, dataset='bench.1@250-0')
    run = os.path.join(root, 'run')
    os.makedirs(os.path.join(run, 'args'))
    with open(os.path.join(run, 'args', 'args.json'), 'w') as f:
        json.dump(args, f)
    ema = models.build_model('resnet', 10, 3, 32, 4, 3, seed=1)
    prefix = os.path.join(run, 'tf', 'model.ckpt-00001024')
    tf.train.Checkpoint(ema_model=ema).write(prefix)
    runs.write_checkpoint_state(os.path.join(run, 'tf'), prefix, [prefix])
    return run


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines while saving the export
    t = time.perf_counter()
    import numpy as np
    import tensorflow as tf
    from libml import export, images as image_lib, predict, runs
    t_import = time.perf_counter() - t
    n, size, batch = FLAGS.images, FLAGS.size, FLAGS.batch
    with open('/proc/cpuinfo') as f:
        cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')),
                   'unknown CPU')
    print(f'TensorFlow {tf.__version__}, {os.cpu_count()} CPU(s) ({cpu}); {n} PNGs {size}x{size}x3, '
          f'WRN-28-2 (10 classes), batch {batch}')
    with tempfile.TemporaryDirectory() as root:
        folder = os.path.join(root, 'images')
        os.makedirs(folder)
        make_images(folder, n, size)
        run = make_run(root, size)

        t = time.perf_counter()
        model, args, prefix = runs.restore_ema_model(run)
        t_restore = time.perf_counter() - t
        fn = predict.probability_function(model, size, size, 3)
        t = time.perf_counter()
        fn(tf.zeros([batch, size, size, 3]))
        t_trace = time.perf_counter() - t

        paths = predict.list_images(folder)[0]
        t = time.perf_counter()
        predict.load_images(paths[:8], size, size, 3, batch)  # tf.data's one-off start-up
        t_warm = time.perf_counter() - t
        t = time.perf_counter()
        images = predict.load_images(paths, size, size, 3, batch)
        t_decode = time.perf_counter() - t

        t = time.perf_counter()
        exported = os.path.join(root, 'exported')
        export.export_run(run, exported, 'both', say=lambda *a: None)
        t_export = time.perf_counter() - t
        loaded = tf.saved_model.load(exported)
        serve, pixels_fn = loaded.signatures['serving_default'], loaded.signatures['predict_pixels']
        tflite = os.path.join(exported, export.TFLITE_FILE)
        threads = os.cpu_count()  # TFLite's default may use fewer than TensorFlow does
        serve(image_bytes=tf.constant([open(p, 'rb').read() for p in paths[:batch]]))  # warm-up
        pixels_fn(pixels=tf.constant(images[:batch]))
        export.tflite_probabilities(tflite, images[:batch], batch, threads)

        def saved_model_files():
            out = []
            for i in range(0, n, batch):
                data = [open(p, 'rb').read() for p in paths[i:i + batch]]
                out.append(serve(image_bytes=tf.constant(data))['probabilities'].numpy())
            return np.concatenate(out)

        def saved_model_pixels():
            return np.concatenate([pixels_fn(pixels=tf.constant(images[i:i + batch]))
                                   ['probabilities'].numpy() for i in range(0, n, batch)])

        def tflite_files():
            ds, _ = image_lib.pixel_dataset(paths, size, size, 3)
            return export.tflite_probabilities(  # decoded in tf.data threads, ahead of the model
                tflite, np.stack([x for _, x in ds.prefetch(batch).as_numpy_iterator()]), batch,
                threads)

        def tflite_pixels():
            return export.tflite_probabilities(tflite, images, batch, threads)

        extra = {'SavedModel, files (serving_default)': saved_model_files,
                 'SavedModel, pixels (predict_pixels)': saved_model_pixels,
                 'TFLite, files (project decoder)': tflite_files,
                 'TFLite, pixels': tflite_pixels}
        extra_rates, extra_cpu = {k: [] for k in extra}, {k: [] for k in extra}

        bare, e2e, bare_cpu, e2e_cpu = [], [], [], []
        for _ in range(FLAGS.repeats):
            t, c = time.perf_counter(), time.process_time()
            probs_bare = predict.predict(model, images, batch)
            bare.append(n / (time.perf_counter() - t))
            bare_cpu.append(n / (time.process_time() - c))
            t, c = time.perf_counter(), time.process_time()
            paths = predict.list_images(folder)[0]
            probs, rows = predict.predict_files(model, paths, size, size, 3, batch, progress=False)
            e2e.append(n / (time.perf_counter() - t))
            e2e_cpu.append(n / (time.process_time() - c))
            assert len(rows) == n and abs(probs - probs_bare).max() < 1e-4
            for name, fn in extra.items():
                t, c = time.perf_counter(), time.process_time()
                probs = fn()
                extra_rates[name].append(n / (time.perf_counter() - t))
                extra_cpu[name].append(n / (time.process_time() - c))
                assert probs.shape == probs_bare.shape and abs(probs - probs_bare).max() < 1e-4, name

        out = os.path.join(root, 'out')
        t = time.perf_counter()
        predict.run_inference(run, folder, out_dir=out, progress=False)
        t_cold = time.perf_counter() - t

    print(f'import TensorFlow {t_import:.1f} s, restore {t_restore:.2f} s, trace {t_trace:.1f} s, '
          f'tf.data start-up {t_warm:.1f} s (not counted below)')
    print(f'decode only (load_images):         {n / t_decode:8.0f} images/s')
    print(f'bare forward (images in memory):   {max(bare):8.1f} images/s   '
          f'(runs: {", ".join(f"{x:.1f}" for x in bare)})')
    print(f'end to end (list+decode+forward):  {max(e2e):8.1f} images/s   '
          f'(runs: {", ".join(f"{x:.1f}" for x in e2e)})')
    print(f'ratio end to end / bare forward:   {max(e2e) / max(bare):8.2f}   (goal >= 0.70; best '
          f'runs; medians {statistics.median(e2e) / statistics.median(bare):.2f})')
    print(f'per CPU second (all threads), robust to other processes: bare '
          f'{statistics.median(bare_cpu):.1f}, end to end {statistics.median(e2e_cpu):.1f} images/s; '
          f'ratio {statistics.median(e2e_cpu) / statistics.median(bare_cpu):.2f}')
    print(f'export (SavedModel + TFLite) {t_export:.1f} s; the exported models, on the same '
          'images (ratio to the bare forward, best runs; goal >= 0.70):')
    for name, rates in extra_rates.items():
        cpu = statistics.median(extra_cpu[name])
        print(f'  {name:<37s} {max(rates):8.1f} images/s   ratio {max(rates) / max(bare):5.2f}   '
              f'(runs: {", ".join(f"{x:.1f}" for x in rates)}); per CPU second {cpu:.1f}, ratio '
              f'{cpu / statistics.median(bare_cpu):.2f}')
    print(f'complete cold run_inference:       {n / t_cold:8.1f} images/s   ({t_cold:.1f} s with '
          'restore, trace and outputs)')
    print('load average (1, 5, 15 min): ' + ', '.join(f'{x:.1f}' for x in os.getloadavg())
          + f' on {os.cpu_count()} CPU(s): other processes skew these numbers')


if __name__ == '__main__':
    app.run(main)
