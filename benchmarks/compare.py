#!/usr/bin/env python3
"""Did semi-supervised learning help on my data, and which method? RealMix, MixMatch and FixMatch
against baselines, on the same splits.

    python benchmarks/compare.py --dataset=digits --labels=50 --seeds=1,2,3
    python benchmarks/compare.py --quick          # the first seed only (the demo's last step)

For every split seed S it cuts (if missing) the split {name}.S@{labels} with
scripts/create_split.py (and, for `digits`, builds the dataset with scripts/create_datasets.py),
then trains, as subprocesses of the entry points users run, each for --train_kimg kimg with the
same shared flags and the training seed S:
  RealMix     realmix.py --dataset={name}.S@{labels}-{valid}
              (labeled images + the unlabeled images of the split, minus the validation ones)
  MixMatch    the same with --tsa=none --percent_mask=-1 (RealMix's defaults: unless
              --realmix_args sets --tsa or --percent_mask, this is RealMix's run, reused)
  FixMatch    fixmatch.py, the same dataset (its own optimizer defaults: SGD, lr 0.03, cosine;
              on digits also DIGITS_FIXMATCH_FLAGS, three stages)
  Supervised  fully_supervised/fs_baseline.py --dataset={name}-0
              --train_record=SSL/{name}.S@{labels}-label.tfrecord   (exactly the same labeled images)
  MixUp       fully_supervised/fs_mixup.py, likewise
and fits scikit-learn references on the same images, in this process:
  LabelSpreading (knn and rbf kernels) on the labeled + the same unlabeled images (pixels / 255),
  SVC on the labeled images only.
Every model is scored on {name}-test. Trained models are evaluated alike, by the trainer: the
test accuracy of their last evaluation, with their evaluated weights (the EMA model with
batch-norm statistics recomputed for those weights), read from their TensorBoard events as
scripts/extract_accuracy.py does (its stats/accuracy.json is written too). A trained model whose
evaluated weights classify fewer than 90% of its own labeled images is flagged: its number does
not measure the method (the run is too short, or diverged).

It prints a table: per-seed test accuracy, mean ± std over seeds, the paired difference
RealMix - method (computed seed by seed, mean ± std) and the wall-clock time of each method; on
digits with 50 labels and at least 3 seeds, also whether the goals are met (RealMix median >=
97% and above every reference on every seed; supervised >= 87%; MixUp >= supervised; FixMatch
median >= 98.5% and above RealMix on every seed). `--quick` runs the first seed only and never
judges those goals.

Every trained method runs for --train_kimg on the trainer's clock, which counts labeled images:
the same number of steps, each with a batch of --batch labeled images. A FixMatch step also
sees uratio (7) times as many unlabeled images, each in two views, as in the paper's own
accounting; so a FixMatch step costs about four times RealMix's (4.1x the nominal FLOPs).

Runs go to {train_dir}/{name}.S@{labels}_kimg{K}/ (one folder per split seed and duration: run
folders are named by dataset and arguments, and the baselines' dataset name {name}-0 does not
tell split seeds apart). Re-running the same command reuses finished runs and resumes
interrupted ones. Shared flags default to the digits settings DIGITS_FLAGS (also the demo's); trainer logs
are in each run folder's compare.log.
"""
import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time
import warnings

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The trainers' flags on digits (also the demo's): the unlabeled-loss ramp is shortened because
# the runs are short; the batch is below the 50 labeled images; two stages (8x8 -> 4x4) instead
# of the default one for 8x8 images gained about a point (95.2% -> 96.4% on seed 1).
DIGITS_FLAGS = ['--augment=svhn', '--batch=32', '--warmup_kimg=64', '--scales=2']
# FixMatch on digits: three stages (8x8 -> 4x4 -> 2x2, the depth of the FixMatch paper's and the
# peer's network). Measured at 128 kimg, split seeds 1/2/3: two stages 97.8/96.4/91.0, three
# 98.4/98.4/98.8 (validation 97.5/97.0/95.5, mean 96.7, against 98.0/95.5/88.5, mean 94.0, with
# two: validation makes the same choice).
# RealMix gained nothing from a third stage (96.0 against 95.8 on seed 1), so it keeps two.
DIGITS_FIXMATCH_FLAGS = ['--scales=3']

# Flags of realmix.py that the supervised baselines do not take (fs_mixup's --beta means another
# thing there): given to RealMix only. Every other shared flag is the trainer's, given to all.
REALMIX_ONLY = {'w_match', 'beta', 'nu', 'T', 'warmup_kimg', 'mixmode', 'tsa', 'percent_mask'}
FIXMATCH_ONLY = {'confidence', 'wu', 'uratio'}
ALGORITHM_ONLY = {'realmix': REALMIX_ONLY, 'fixmatch': FIXMATCH_ONLY}
# MixMatch is realmix.py without RealMix's additions (its defaults).
MIXMATCH_FLAGS = ['--tsa=none', '--percent_mask=-1']
KIMG = 128
GOAL_REALMIX = 97.0
GOAL_FIXMATCH = 98.5
GOAL_SUPERVISED = 87.0
GOAL_SEEDS = 3
# A trained model whose evaluated (EMA) weights classify fewer of its own labeled images than
# this (percent) is flagged: its run was too short to be judged (see the table's note).
UNDERFIT = 90.0

TRAINED = [  # key, label, entry point, run folder prefix
    ('realmix', 'RealMix', 'realmix.py', 'RealMix'),
    ('mixmatch', 'MixMatch', 'realmix.py', 'RealMix'),
    ('fixmatch', 'FixMatch', 'fixmatch.py', 'FixMatch'),
    ('supervised', 'Supervised', 'fully_supervised/fs_baseline.py', 'FSBaseline'),
    ('mixup', 'MixUp', 'fully_supervised/fs_mixup.py', 'FSMixup'),
]
METHODS = [key for key, *_ in TRAINED] + ['sklearn']
NOISE = re.compile(r'^(WARNING: All log messages|[IWE]\d{4} |.*oneDNN custom operations)')
SHOWN = re.compile(r'^(kimg \d+ +accuracy|Training |Resuming |.*already trained)')


def benchmark_parser(doc, seeds, train_dir):
    """An argument parser with the flags of every benchmark of trained runs on digits-like data:
    --dataset, --seeds (checked by parse_seeds), --train_dir."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', default='digits', help='dataset NAME (its {NAME}-train and '
                   '{NAME}-test records under $ML_DATA; digits is built if missing)')
    p.add_argument('--seeds', default=seeds, help='split seeds (comma-separated); each is also '
                   'the training seed of the trained models')
    p.add_argument('--train_dir', default=train_dir, help='root of the runs')
    return p


def parse_seeds(p, args):
    """args.seed_list from --seeds, and --dataset checked: argparse errors naming the flag."""
    try:
        args.seed_list = [int(s) for s in args.seeds.split(',') if s.strip()]
    except ValueError:
        p.error(f'--seeds={args.seeds!r}: expected comma-separated integers, e.g. 1,2,3')
    if not args.seed_list or min(args.seed_list) < 1:
        p.error('--seeds: give at least one seed, each >= 1 (seed 0 means an unshuffled split)')
    if re.search(r'[-.@]', args.dataset):
        p.error(f'--dataset={args.dataset!r}: give the NAME only (no "-", "." or "@"), e.g. digits')


def parse_args(argv=None):
    p = benchmark_parser(__doc__, '1,2,3', 'experiments/compare')
    p.add_argument('--labels', type=int, default=50, help='labeled images per split')
    p.add_argument('--valid', type=int, default=200, help="RealMix's validation images (taken "
                   'from the unlabeled file, never trained on)')
    p.add_argument('--quick', action='store_true', help='first seed only (a few minutes on 2 CPU '
                   'cores); its RealMix run is the demo\'s, so after the demo only the baselines '
                   'train; the goals are not judged')
    p.add_argument('--train_kimg', type=int, default=KIMG, help='training duration of each '
                   'trained model in kimg')
    p.add_argument('--shared_args', default=None, help='flags given to all three trainers '
                   '(RealMix-only ones such as --warmup_kimg go to RealMix only); default: the '
                   "demo's digits settings " + ' '.join(DIGITS_FLAGS) + ' for digits, '
                   '"--augment=cifar10" otherwise')
    p.add_argument('--realmix_args', default='', help='extra flags for realmix.py only (RealMix '
                   'and MixMatch)')
    p.add_argument('--fixmatch_args', default=None, help='extra flags for fixmatch.py only; '
                   'default ' + ' '.join(DIGITS_FIXMATCH_FLAGS) + ' for digits with the default '
                   '--shared_args, none otherwise')
    p.add_argument('--methods', default=','.join(METHODS),
                   help=f'subset of {",".join(METHODS)} (RealMix is required)')
    p.add_argument('--ls_knn', type=int, default=7, help='LabelSpreading knn: n_neighbors')
    p.add_argument('--ls_gamma', type=float, default=12.0, help='LabelSpreading rbf: gamma '
                   '(pixels scaled to [0, 1]; 12 was the best of 0.5..16 on digits@50 seeds 1-3, '
                   'so a strict reference)')
    args = p.parse_args(argv)
    parse_seeds(p, args)
    if args.quick:
        args.seed_list = args.seed_list[:1]
    if args.train_kimg < 1:
        p.error('--train_kimg must be at least 1')
    args.methods = {m.strip() for m in args.methods.split(',') if m.strip()}
    unknown = args.methods - set(METHODS)
    if unknown or 'realmix' not in args.methods:
        p.error(f'--methods={",".join(sorted(args.methods))}: choose among {", ".join(METHODS)}; '
                'realmix is required (the table compares against it)')
    digits_defaults = args.dataset == 'digits' and args.shared_args is None
    if args.fixmatch_args is None:
        args.fixmatch_args = ' '.join(DIGITS_FIXMATCH_FLAGS) if digits_defaults else ''
    if args.shared_args is None:
        args.shared_args = ' '.join(DIGITS_FLAGS) if args.dataset == 'digits' else '--augment=cifar10'
    return args


# ----------------------------------------------------------------------------------------------
# Data.

def run_script(args, env, title, tool='compare'):
    print(f'\n== {title}\n$ {" ".join(args)}', flush=True)
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env)
    if result.returncode:
        sys.exit(f'{tool}: "{title}" failed (exit {result.returncode}); see above.')


def ensure_dataset(name, env, tool='compare'):
    """$ML_DATA/{name}-train.tfrecord (built for digits when missing, with its test file)."""
    ml_data = env['ML_DATA']
    train = os.path.join(ml_data, f'{name}-train.tfrecord')
    if not os.path.exists(os.path.join(ml_data, f'{name}-test.tfrecord')) or not os.path.exists(train):
        if name != 'digits':
            sys.exit(f'{tool}: {train} or {name}-test.tfrecord is missing under $ML_DATA='
                     f'{ml_data}; create them with scripts/create_datasets.py (README 1.2).')
        run_script(['scripts/create_datasets.py', 'digits'], env, 'Build the digits dataset', tool)
    return train


def ensure_splits(args, env, balanced=False, tool='compare'):
    """The splits {name}.{seed}@{labels} of every seed (cut when missing; `balanced`: the same
    count per class)."""
    ml_data, name = env['ML_DATA'], args.dataset
    train = ensure_dataset(name, env, tool)
    for seed in args.seed_list:
        if not os.path.exists(os.path.join(ml_data, 'SSL', f'{name}.{seed}@{args.labels}-label.tfrecord')):
            run_script(['scripts/create_split.py', f'--seed={seed}',
                        f'--label_split_size={args.labels}', *(['--class_balance'] * balanced),
                        os.path.join(ml_data, 'SSL', name), train], env,
                       f'Cut the split {name}.{seed}@{args.labels}', tool)


# ----------------------------------------------------------------------------------------------
# Trained methods (subprocesses of the real entry points).

def final_accuracy(run_dir, images):
    """(test accuracy, labeled-train accuracy) of the run's last evaluation, if it evaluated at
    `images` (the run is complete); else None. Also writes stats/accuracy.json."""
    from libml import events
    files = events.event_files(run_dir)
    by_step, _, _ = events.read_scalars(files, 'accuracy_test')
    if not by_step or max(by_step) < images:
        return None
    from libml.files import write_json
    values = [by_step[s] for s in sorted(by_step)]
    write_json(os.path.join(run_dir, 'stats', 'accuracy.json'), events.medians(values))
    last = max(by_step)
    train, _, _ = events.read_scalars(files, 'accuracy_train_labeled')
    return by_step[last], train.get(last, float('nan'))


def split_flags(text, algorithm='realmix'):
    """(flags every trainer takes, flags of `algorithm` only) of the shared flags `text`; the
    flags of the other algorithms are left out."""
    shared, own = [], []
    for arg in text.split():
        key = arg.lstrip('-').split('=')[0]
        owner = [a for a, keys in ALGORITHM_ONLY.items()
                 if key in keys or key.startswith('no') and key[2:] in keys]
        if not owner:
            shared.append(arg)
        elif algorithm in owner:
            own.append(arg)
    return shared, own


def common_flags(train_dir, kimg, seed, shared):
    """The trainer flags every trained method gets: 8 evaluations, the last 2 checkpoints kept."""
    period = max(kimg // 8, 1)
    return [f'--train_dir={train_dir}', f'--train_kimg={kimg}', f'--report_kimg={period}',
            f'--save_kimg={period}', '--keep_ckpt=2', f'--seed={seed}', *shared]


def command(key, args, seed, train_dir):
    name, labels, kimg = args.dataset, args.labels, args.train_kimg
    algorithm = 'fixmatch' if key == 'fixmatch' else 'realmix'
    shared, own = split_flags(args.shared_args, algorithm)
    common = common_flags(train_dir, kimg, seed, shared)
    ssl = f'--dataset={name}.{seed}@{labels}-{args.valid}'
    if key == 'realmix':
        return ['realmix.py', ssl, *common, *own, *args.realmix_args.split()]
    if key == 'mixmatch':
        return ['realmix.py', ssl, *common, *own, *args.realmix_args.split(), *MIXMATCH_FLAGS]
    if key == 'fixmatch':
        return ['fixmatch.py', ssl, *common, *own, *args.fixmatch_args.split()]
    script = dict((k, s) for k, _, s, _ in TRAINED)[key]
    return [script, f'--dataset={name}-0', f'--train_record=SSL/{name}.{seed}@{labels}-label.tfrecord',
            f'--test_record={name}-test.tfrecord', *common]


def stream(cmd, env, log_path):
    """Runs cmd, writing all output to log_path and echoing evaluations; returns the exit code."""
    with open(log_path, 'ab') as log:
        log.write(f'\n$ {" ".join(cmd)}\n'.encode())
        proc = subprocess.Popen([sys.executable, *cmd], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        pending = b''
        for chunk in iter(lambda: proc.stdout.read1(4096), b''):
            log.write(chunk)
            pending += chunk
            *lines, pending = re.split(rb'[\r\n]', pending)
            for line in lines:
                text = line.decode(errors='replace').strip()
                if SHOWN.match(text):
                    print('   ', text, flush=True)
        return proc.wait()


def mixmatch_is_realmix(args):
    """Whether RealMix's command already is MixMatch (it leaves --tsa and --percent_mask at their
    defaults, MixMatch's values)."""
    values = {}
    for arg in command('realmix', args, 1, '.'):
        key, _, value = arg.lstrip('-').partition('=')
        values[key] = value
    return values.get('tsa', 'none') == 'none' and float(values.get('percent_mask', -1)) == -1


def train_one(key, label, prefix, args, seed, env):
    """Trains (or reuses) one method on one split; returns (test accuracy, seconds, accuracy on
    its own labeled images, run folder). The demo trains its RealMix run through this too, so
    `--quick` after the demo finds it finished."""
    root = os.path.abspath(args.train_dir)
    train_dir = os.path.join(root, f'{args.dataset}.{seed}@{args.labels}_kimg{args.train_kimg}')
    cmd = command(key, args, seed, train_dir)
    return run_trained(key, f'{label}, seed {seed}', prefix, cmd, train_dir,
                       args.train_kimg << 10, env)


def run_trained(key, title, prefix, cmd, train_dir, images, env, tool='compare'):
    """Runs the training command `cmd` (its --dataset first) in `train_dir`, or reuses its run
    when the ledger train_dir/compare_runs.json says the same command finished there before
    (`key` names the ledger entry and the log {key}.log). `images`: the run's length. Returns
    (test accuracy, seconds, accuracy on its own labeled images, run folder); a failed run ends
    the program with the tail of its log, named by `tool`."""
    os.makedirs(train_dir, exist_ok=True)
    ledger_path = os.path.join(train_dir, 'compare_runs.json')
    ledger = json.load(open(ledger_path)) if os.path.exists(ledger_path) else {}
    entry = ledger.get(key, {})
    if entry.get('command') == cmd and os.path.isdir(entry.get('run_dir', '')):
        found = final_accuracy(entry['run_dir'], images)
        if found is not None:
            print(f'-- {title}: finished earlier ({found[0]:.2f}%), {entry["run_dir"]}')
            return found[0], entry['seconds'], found[1], entry['run_dir']
    print(f'-- {title}\n$ {" ".join(cmd)}', flush=True)
    dataset = cmd[1].split('=', 1)[1]
    log_path = os.path.join(train_dir, f'{key}.log')
    from libml.files import write_json
    earlier = entry.get('seconds', 0) if entry.get('command') == cmd else 0
    start = time.time()
    try:
        code = stream(cmd, env, log_path)
    except KeyboardInterrupt:  # the trainer stopped too; keep its time for the resumed run
        ledger[key] = {'command': cmd, 'run_dir': '', 'seconds': earlier + time.time() - start}
        write_json(ledger_path, ledger)
        raise
    seconds = earlier + time.time() - start
    if code:
        with open(log_path, errors='replace') as f:
            tail = re.split(r'[\r\n]', f.read())
        tail = [t for t in tail if t.strip() and not NOISE.match(t) and '%|' not in t][-15:]
        sys.exit('\n'.join(tail) + f'\n{tool}: {title} failed (exit {code}); full log: {log_path}')
    runs = glob.glob(os.path.join(glob.escape(train_dir), glob.escape(dataset), prefix + '_*',
                                  'args', 'args.json'))
    if not runs:
        sys.exit(f'{tool}: {title} finished but left no run folder under {train_dir}/{dataset}.')
    run_dir = os.path.dirname(os.path.dirname(max(runs, key=os.path.getmtime)))
    found = final_accuracy(run_dir, images)
    if found is None:
        sys.exit(f'{tool}: {title} finished but {run_dir} has no test accuracy at '
                 f'{images >> 10} kimg; see {log_path}.')
    ledger[key] = {'command': cmd, 'run_dir': run_dir, 'seconds': seconds, 'accuracy': found[0],
                   'accuracy_train_labeled': found[1]}
    write_json(ledger_path, ledger)
    return found[0], seconds, found[1], run_dir


# ----------------------------------------------------------------------------------------------
# scikit-learn references, on the images the trained models see.

def sklearn_references(args, seed):
    """{label: (accuracy, seconds)} of the references on split `seed`."""
    import numpy as np
    from sklearn.semi_supervised import LabelSpreading
    from sklearn.svm import SVC

    from libml import datasets, pipeline
    ds = datasets.resolve(f'{args.dataset}.{seed}@{args.labels}-{args.valid}')
    flat = lambda a: a.reshape(len(a), -1).astype(np.float64) / 255
    xl, yl = pipeline.load_arrays(ds.labeled, ds.shape)
    xu, _ = pipeline.load_arrays(ds.unlabeled, ds.shape)   # validation images excluded
    xt, yt = pipeline.load_arrays(ds.test, ds.shape)
    xl, xu, xt = flat(xl), flat(xu), flat(xt)
    x_all = np.concatenate([xl, xu])
    y_all = np.concatenate([yl, -np.ones(len(xu), np.int64)])
    models = [
        (f'LabelSpreading knn k={args.ls_knn}',
         lambda: LabelSpreading(kernel='knn', n_neighbors=args.ls_knn, max_iter=1000), True),
        (f'LabelSpreading rbf g={args.ls_gamma:g}',
         lambda: LabelSpreading(kernel='rbf', gamma=args.ls_gamma, max_iter=1000), True),
        # C=10: better than C=1 (and as good as 100) on digits@50 seeds 1-3.
        ('SVM rbf C=10 (labeled only)', lambda: SVC(kernel='rbf', C=10, gamma='scale'), False),
    ]
    out = {}
    for label, make, semi in models:
        start = time.time()
        with warnings.catch_warnings():
            # LabelSpreading's knn graph can leave an image without any label mass (0/0): such
            # test images get no class, counted as errors and reported.
            warnings.simplefilter('ignore', RuntimeWarning)
            model = make().fit(*((x_all, y_all) if semi else (xl, yl)))
            if semi:
                probs = model.predict_proba(xt)
                undefined = int(np.isnan(probs).any(1).sum())
                pred = np.where(np.isnan(probs).any(1), -1, np.nan_to_num(probs).argmax(1))
            else:
                undefined, pred = 0, model.predict(xt)
        if undefined:
            print(f'   note: {label} left {undefined} test images without a class (counted wrong)')
        out[label] = (100 * float((pred == yt).mean()), time.time() - start)
    return out, len(xl), len(xu), len(xt)


# ----------------------------------------------------------------------------------------------
# The table.

def mean_std(values):
    if len(values) == 1:
        return f'{values[0]:6.2f}        '
    return f'{statistics.mean(values):6.2f} ± {statistics.stdev(values):5.2f}'


def duration(seconds):
    seconds = int(round(seconds))
    return f'{seconds // 60:d}m{seconds % 60:02d}s' if seconds >= 60 else f'{seconds}s'


def print_table(args, results, times, sizes, underfit, wall):
    seeds = args.seed_list
    methods = list(results)
    realmix = results['RealMix']
    nl, nu, nt = sizes
    fixmatch_extra = 'FixMatch' in results and args.fixmatch_args
    print(f'\n== {args.dataset}: {args.labels} labels, split seeds {",".join(map(str, seeds))}; '
          f'trained models {args.train_kimg} kimg each (shared flags: {args.shared_args}'
          f'{"; RealMix also " + args.realmix_args if args.realmix_args else ""}'
          f'{"; FixMatch also " + args.fixmatch_args if fixmatch_extra else ""})')
    print(f'   {nl} labeled + {nu} unlabeled training images (RealMix also holds out {args.valid} '
          f'validation images), test accuracy (%) on {nt} {args.dataset}-test images')
    width = max(len(m) for m in methods) + 2
    head = f'{"method":<{width}}' + ''.join(f'{"seed " + str(s):>9}' for s in seeds)
    head += f'  {"mean ± std":>15}  {"RealMix − method":>17}  {"time (all seeds)":>16}'
    print(head)
    print('-' * len(head))
    for m in methods:
        row = f'{m + ("*" if m in underfit else ""):<{width}}' + ''.join(f'{a:9.2f}' for a in results[m])
        diff = [r - a for r, a in zip(realmix, results[m])]
        pair = '—' if m == 'RealMix' else mean_std(diff).strip()
        row += f'  {mean_std(results[m]):>15}  {pair:>17}  {duration(times[m]):>16}'
        print(row)
    print('-' * len(head))
    for m, cases in underfit.items():
        seen = ', '.join(f'{a:.0f}% (seed {s})' for s, a in cases)
        print(f'* {m}: its evaluated weights classify only {seen} of its own labeled images '
              f'(< {UNDERFIT:g}%): the run did not fit its training labels (too short, or it '
              'diverged), so its test accuracy does not measure the method.')
    print(f'Wall time of this comparison: {duration(wall)} (trained runs count their own time, '
          'also when reused from an earlier invocation).')
    if args.dataset == 'digits' and args.labels == 50:
        print_goals(args, results, underfit)


def print_goals(args, results, underfit):
    """The goals of the digits benchmark, judged only on a full run (>= 3 seeds, not --quick)."""
    stated = (f'RealMix median >= {GOAL_REALMIX:g}% and above every reference on every seed; '
              f'supervised median >= {GOAL_SUPERVISED:g}%; MixUp >= supervised; FixMatch median '
              f'>= {GOAL_FIXMATCH:g}% and above RealMix on every seed')
    if args.quick or len(args.seed_list) < GOAL_SEEDS:
        why = '--quick runs one seed' if args.quick else f'{len(args.seed_list)} seed(s) ran'
        print(f'Goals ({stated}): not judged ({why}; they need {GOAL_SEEDS} seeds: '
              'python benchmarks/compare.py --seeds=1,2,3).')
        return
    realmix = results['RealMix']
    median = statistics.median(realmix)
    # The references are the baselines: the other semi-supervised methods have goals of their own.
    not_above = [m for m, v in results.items() if m not in ('RealMix', 'MixMatch', 'FixMatch')
                 and any(r <= a for r, a in zip(realmix, v))]
    checks = [(f'RealMix median >= {GOAL_REALMIX:g}%', median >= GOAL_REALMIX, f'{median:.2f}%'),
              ('RealMix above every reference on every seed', not not_above,
               'not above ' + ', '.join(not_above) if not_above else 'yes')]
    if 'Supervised' in results:
        sup = statistics.median(results['Supervised'])
        checks.append((f'supervised median >= {GOAL_SUPERVISED:g}%', sup >= GOAL_SUPERVISED,
                       f'{sup:.2f}%'))
        if 'MixUp' in results:
            mix = statistics.median(results['MixUp'])
            checks.append(('MixUp >= supervised (medians)', mix >= sup, f'{mix:.2f}% vs {sup:.2f}%'))
    if 'FixMatch' in results:
        fix = results['FixMatch']
        below = [f'seed {s}: {f:.2f} vs {r:.2f}' for s, f, r in zip(args.seed_list, fix, realmix)
                 if f <= r]
        checks += [(f'FixMatch median >= {GOAL_FIXMATCH:g}%',
                    statistics.median(fix) >= GOAL_FIXMATCH, f'{statistics.median(fix):.2f}%'),
                   ('FixMatch above RealMix on every seed', not below,
                    'not on ' + ', '.join(below) if below else 'yes')]
    for text, ok, value in checks:
        print(f'Goal: {text}: {"MET" if ok else "NOT MET"} ({value})')
    if underfit:
        print(f'(Flagged above, so not trustworthy: {", ".join(underfit)}.)')


def subprocess_env():
    """The environment of the entry points run as subprocesses: this one, with $ML_DATA set
    (./data when unset, said once) here too."""
    env = dict(os.environ)
    if not env.get('ML_DATA'):
        env['ML_DATA'] = os.path.join(REPO, 'data')
        print(f'ML_DATA is not set: using {env["ML_DATA"]}')
    os.environ['ML_DATA'] = env['ML_DATA']
    return env


def main():
    args = parse_args()
    env = subprocess_env()
    start = time.time()
    ensure_splits(args, env)
    results, times, sizes, underfit = {}, {}, None, {}
    for seed in args.seed_list:
        print(f'\n== Split {args.dataset}.{seed}@{args.labels} (training seed {seed})', flush=True)
        fits = {}
        for key, label, _, prefix in TRAINED:
            if key not in args.methods:
                continue
            if key == 'mixmatch' and mixmatch_is_realmix(args):
                print(f'-- MixMatch, seed {seed}: the RealMix run (its --tsa and --percent_mask '
                      'are MixMatch\'s)')
                acc, sec, fit = results['RealMix'][-1], 0, fits['RealMix']
            else:
                acc, sec, fit, _ = train_one(key, label, prefix, args, seed, env)
            fits[label] = fit
            results.setdefault(label, []).append(acc)
            if fit < UNDERFIT:
                underfit.setdefault(label, []).append((seed, fit))
            times[label] = times.get(label, 0) + sec
        if 'sklearn' in args.methods:
            refs, *sizes = sklearn_references(args, seed)
            for label, (acc, sec) in refs.items():
                print(f'-- {label}, seed {seed}: {acc:.2f}% ({sec:.1f} s)')
                results.setdefault(label, []).append(acc)
                times[label] = times.get(label, 0) + sec
    if sizes is None:
        from libml import datasets, pipeline
        ds = datasets.resolve(f'{args.dataset}.{args.seed_list[0]}@{args.labels}-{args.valid}')
        sizes = [len(pipeline.load_arrays(p, ds.shape)[1]) for p in (ds.labeled, ds.unlabeled, ds.test)]
    print_table(args, results, times, sizes, underfit, time.time() - start)


if __name__ == '__main__':
    main()
