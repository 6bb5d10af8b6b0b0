#!/usr/bin/env python3
"""The demo: RealMix on the handwritten digits that ship with scikit-learn, start to finish.

Runs, and prints before each step, the commands a user would type (README sections 1-3):
  1. scripts/create_datasets.py digits           -> $ML_DATA/digits-{train,test}.tfrecord
  2. scripts/create_split.py (seed 1, 50 labels) -> $ML_DATA/SSL/digits.1@50-{label,unlabel}
  3. realmix.py --dataset=digits.1@50-200        -> experiments/digits.1@50_kimg64/digits.1@50-200/RealMix_.../
  4. scripts/extract_accuracy.py RUN             -> RUN/stats/accuracy.json
  5. realmix.py --perform_inference on a folder of test images written as PNG files
  6. benchmarks/compare.py --quick               -> did semi-supervised learning help? RealMix (the
     run of step 3, reused), the supervised and MixUp baselines (same split, seed and image
     budget) and scikit-learn references on the same images
Step 3 is the RealMix run of the comparison (its command is built by benchmarks/compare.py), so
step 6 trains only the baselines. $ML_DATA defaults to ./data. Steps whose outputs exist are
skipped, and training resumes, so the demo can be interrupted and run again. Each model trains
64 kimg (half the benchmark's 128: on digits every method has reached its plateau by then, see
benchmarks/README.md, and the demo fits 10 minutes on 2 cores). `--quick` trains 4 kimg per model
(a smoke test whose accuracies mean nothing).
"""
import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.abspath(__file__))
SPLIT = 'digits.1@50'
VALID = 200
DEMO_KIMG = 64   # see the docstring: the plateau of every method on digits, in half the time


def step(title, args, env):
    print(f'\n== {title}\n$ {" ".join(args)}', flush=True)
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env)
    if result.returncode:
        sys.exit(f'demo: the step "{title}" failed (exit {result.returncode}); see above.')


def write_test_images(ml_data, folder, count=100):
    """The first `count` digits-test images as PNG files in {folder}/{class}/, like a user's folder."""
    os.environ.setdefault('ML_DATA', ml_data)
    from libml import records
    batch = next(records.read_records(os.path.join(ml_data, 'digits-test.tfrecord'), batch_size=count))
    for i, (png, label) in enumerate(zip(batch['image'], batch['label'])):
        os.makedirs(os.path.join(folder, str(label)), exist_ok=True)
        with open(os.path.join(folder, str(label), f'{i:03d}.png'), 'wb') as f:
            f.write(png)
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='train 4 kimg per model (a smoke test)')
    parser.add_argument('--train_dir', default='experiments')
    parser.add_argument('--train_kimg', type=int, default=None)
    args = parser.parse_args()
    # Every step runs from the repository root: paths are shown relative to it when inside it.
    train_dir = os.path.abspath(args.train_dir)
    args.train_dir = train_dir if os.path.relpath(train_dir, REPO).startswith('..') else \
        os.path.relpath(train_dir, REPO)
    os.chdir(REPO)
    env = dict(os.environ)
    if not env.get('ML_DATA'):
        env['ML_DATA'] = os.path.join(REPO, 'data')
        print(f'ML_DATA is not set: using {env["ML_DATA"]}')
    os.environ['ML_DATA'] = ml_data = env['ML_DATA']
    from benchmarks import compare  # the comparison of step 6 and the command of step 3
    kimg = args.train_kimg or (4 if args.quick else DEMO_KIMG)
    # FixMatch costs about four RealMix runs: left to compare.py itself, so the demo stays short.
    comparison = ['--quick', f'--train_dir={args.train_dir}', f'--train_kimg={kimg}',
                  f'--valid={VALID}', '--seeds=1', '--methods=realmix,supervised,mixup,sklearn']
    start = time.time()

    if not os.path.exists(os.path.join(ml_data, 'digits-test.tfrecord')):
        step('1. Build the digits dataset', ['scripts/create_datasets.py', 'digits'], env)
    if not os.path.exists(os.path.join(ml_data, 'SSL', SPLIT + '-label.tfrecord')):
        step('2. Cut a split with 50 labels (5 per class)',
             ['scripts/create_split.py', '--seed=1', '--label_split_size=50',
              os.path.join(ml_data, 'SSL', 'digits'), os.path.join(ml_data, 'digits-train.tfrecord')],
             env)
    print(f'\n== 3. Train RealMix for {kimg} kimg ({VALID} validation images; Ctrl-C and rerun '
          'resumes)', flush=True)
    accuracy, _, _, run = compare.train_one('realmix', 'RealMix', 'RealMix',
                                            compare.parse_args(comparison), 1, env)
    step('4. Median test accuracy of the last evaluations',
         ['scripts/extract_accuracy.py', run], env)
    print(f'\nRealMix on digits with 50 labels: {accuracy:.2f}% test accuracy (last evaluation) '
          f'after {time.time() - start:.0f} s.\nRun folder: {run}\n'
          f'TensorBoard: tensorboard --logdir {args.train_dir}')
    folder = write_test_images(ml_data, os.path.join(args.train_dir, 'demo_images'))
    step('5. Predict a folder of new images (one sub-folder per class, so the accuracy is known)',
         ['realmix.py', '--perform_inference', f'--dataset={SPLIT}-{VALID}', f'--inference_dir={folder}',
          f'--inference_ckpt={run}', f'--inference_out={args.train_dir}'], env)
    step('6. Did semi-supervised learning help? RealMix (step 3) against the supervised and MixUp '
         'baselines and scikit-learn, on the same split (the full comparison over three seeds, '
         'with MixMatch and FixMatch: benchmarks/compare.py --seeds=1,2,3)',
         ['benchmarks/compare.py', *comparison], env)
    print(f'\nThe demo took {time.time() - start:.0f} s.')


if __name__ == '__main__':
    main()
