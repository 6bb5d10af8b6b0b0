#!/usr/bin/env python3
"""Did semi-supervised learning help on my data, and which method? RealMix, MixMatch, FixMatch and
the classic methods against baselines, on the same splits.

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
  Pi-Model, Pseudo-Label, Mean Teacher, VAT, UDA
              algorithms/*.py, the same dataset as RealMix; only when named in --methods
              (pi_model, pseudo_label, mean_teacher, vat, uda); on digits with the default
              shared flags also DIGITS_CLASSIC_FLAGS
and fits scikit-learn references on the same images, in this process:
  LabelSpreading (knn and rbf kernels) on the labeled + the same unlabeled images (pixels / 255),
  SVC on the labeled images only.
Every model is scored on {name}-test. Trained models are evaluated alike, by the trainer: the
test accuracy of their last evaluation, with their evaluated weights (the EMA model with
batch-norm statistics recomputed for those weights), read from their TensorBoard events as
scripts/extract_accuracy.py does (its stats/accuracy.json is written too). A trained model whose
evaluated weights classify fewer than 90% of its own labeled images is flagged: its number does
not measure the method (the run is too short, or diverged).

A trained run is also flagged, on the seed's cell, when it collapsed: a semi-supervised method
(RealMix, MixMatch, FixMatch) below the supervised baseline of the same seed; a run whose
accuracy on its own labeled images ended more than FIT_DROP points below its best earlier
evaluation; a run whose final test accuracy is more than COLLAPSE_DROP points below its best.

It prints a table: per-seed test accuracy, mean ± std over seeds, the paired difference
RealMix - method (computed seed by seed, mean ± std) and the time of each method (trained runs:
the training and evaluation time their trainer logged, monitors/period_seconds, so a run resumed
across sessions counts its real time; runs older than that log: the wall time of their
subprocesses); on digits with 50 labels and at least 3 seeds, also whether the goals are met
(RealMix median >= 97% and above every reference on every seed; supervised >= 87%; MixUp >=
supervised; FixMatch median >= 98.5% and above RealMix on every seed). `--quick` runs the first
seed only and never judges those goals.

Learning curves of every trained run (each evaluation: kimg, cumulative hours and CPU hours,
accuracy on the labeled images, validation and test) go to
{train_dir}/curves_{name}_{labels}_kimg{K}.csv and .png (test solid, validation dashed, against
kimg and against hours), also when every run was reused.

    python benchmarks/compare.py --preset=cifar10 --dataset=cifarjpg

runs the paper's setting (PRESETS) on a CIFAR-10-like dataset (hours per run on 2 CPU cores;
--no_train shows the runs as they stand, unfinished ones at their last evaluation); a flag given
on the command line replaces the preset's, and a trainer flag in --shared_args, --realmix_args or
--fixmatch_args replaces the preset's flag of the same name there (the rest of the preset's flags
are kept).

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
import csv
import functools
import glob
import json
import math
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
# The classic methods of algorithms/ (--methods=pi_model,...; not in the default set): their own
# flags, like FixMatch's, go to them only.
CLASSIC_ONLY = {
    'pi_model': {'wu', 'warmup_pos'},
    'pseudo_label': {'wu', 'threshold', 'warmup_pos'},
    'mean_teacher': {'wu', 'warmup_pos'},
    'vat': {'wu', 'vat_eps', 'vat_xi', 'entmin', 'warmup_pos'},
    'uda': {'wu', 'T', 'confidence', 'we', 'tsa', 'uratio'},
}
ALGORITHM_ONLY = {'realmix': REALMIX_ONLY, 'fixmatch': FIXMATCH_ONLY, **CLASSIC_ONLY}
# Their flags on digits with the default --shared_args. VAT: its perturbation norm (6 for 32x32x3)
# kept at the same size per pixel value on 8x8x1 images, 6 * sqrt(64 / 3072) (docs/algorithm.md,
# "Classic methods"); UDA: FixMatch's three stages (its batch and optimizer are FixMatch's).
DIGITS_CLASSIC_FLAGS = {'vat': ['--vat_eps=0.87'], 'uda': DIGITS_FIXMATCH_FLAGS}
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
# A run whose last evaluation is this many points below its best earlier one collapsed: EMA
# weights evaluated on a few hundred images or more wobble by a few points, not by ten.
FIT_DROP = 10.0        # accuracy on its own labeled images
COLLAPSE_DROP = 10.0   # test accuracy
# The marks of flagged cells (explained below the table).
BELOW, UNFIT, LATE = '†', '‡', '§'
SEMI_SUPERVISED = ('RealMix', 'MixMatch', 'FixMatch', 'Pi-Model', 'Pseudo-Label', 'Mean Teacher',
                   'VAT', 'UDA')

# Papers' settings for any dataset shaped like theirs (--preset=NAME --dataset=...): values of
# compare.py's flags. Flags given on the command line win (see apply_preset).
PRESETS = {
    # RealMix's CIFAR-10 benchmark: 250 labels, WRN-28-2 (32 filters, 4 blocks per stage), TSA.
    # The unlabeled-loss ramp stays the paper's 1024 kimg: a 256 kimg run is the first quarter of
    # the paper's schedule. Shortened ramps collapse (benchmarks/README.md, "CIFAR-10").
    # float32: bfloat16 falls back to slow kernels on CPUs without AVX-512, and the run folder
    # names the precision, so a run resumed on another machine must keep one.
    # FixMatch keeps fixmatch.py's defaults, its paper's (uratio 7, SGD lr 0.03 cosine, wd 5e-4).
    'cifar10': {
        'labels': 250, 'valid': 1000, 'train_kimg': 256,
        'shared_args': '--augment=cifar10 --batch=64 --filters=32 --repeat=4 --report_kimg=16 '
                       '--save_kimg=8',
        'realmix_args': '--tsa=linear_schedule',
        'fixmatch_args': '',
    },
}
# compare.py's defaults of the flags a preset may set (shared_args and fixmatch_args depend on
# the dataset: parse_args).
DEFAULTS = {'labels': 50, 'valid': 200, 'train_kimg': KIMG, 'realmix_args': ''}
# The trainer's --epochs default (libml.config.Config.epochs; not imported here, that loads
# TensorFlow): runs stop at epochs x report_kimg kimg.
TRAINER_EPOCHS = 1024

TRAINED = [  # key, label, entry point, run folder prefix
    ('realmix', 'RealMix', 'realmix.py', 'RealMix'),
    ('mixmatch', 'MixMatch', 'realmix.py', 'RealMix'),
    ('fixmatch', 'FixMatch', 'fixmatch.py', 'FixMatch'),
    ('supervised', 'Supervised', 'fully_supervised/fs_baseline.py', 'FSBaseline'),
    ('mixup', 'MixUp', 'fully_supervised/fs_mixup.py', 'FSMixup'),
    ('pi_model', 'Pi-Model', 'algorithms/pi_model.py', 'PiModel'),
    ('pseudo_label', 'Pseudo-Label', 'algorithms/pseudo_label.py', 'PseudoLabel'),
    ('mean_teacher', 'Mean Teacher', 'algorithms/mean_teacher.py', 'MeanTeacher'),
    ('vat', 'VAT', 'algorithms/vat.py', 'VAT'),
    ('uda', 'UDA', 'algorithms/uda.py', 'UDA'),
]
METHODS = [key for key, *_ in TRAINED] + ['sklearn']
# What runs without --methods (the classic methods are asked for by name).
DEFAULT_METHODS = [m for m in METHODS if m not in CLASSIC_ONLY]
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
    p.epilog = 'presets (--preset=NAME):\n' + '\n'.join(
        f'  {name}: ' + ' '.join(f'--{k}={v!r}' if isinstance(v, str) else f'--{k}={v}'
                                 for k, v in flags.items() if v != '')
        for name, flags in PRESETS.items())
    p.add_argument('--preset', choices=sorted(PRESETS), help='a paper\'s setting (listed below) '
                   'for a dataset like its own (give --dataset too); flags given here win, trainer '
                   'flags in --shared_args/--realmix_args/--fixmatch_args replace the preset\'s of '
                   'the same name')
    p.add_argument('--labels', type=int, help='labeled images per split (default '
                   f'{DEFAULTS["labels"]})')
    p.add_argument('--valid', type=int, help="RealMix's validation images (taken from the "
                   f'unlabeled file, never trained on; default {DEFAULTS["valid"]})')
    p.add_argument('--quick', action='store_true', help='first seed only (a few minutes on 2 CPU '
                   'cores); its RealMix run is the demo\'s, so after the demo only the baselines '
                   'train; the goals are not judged')
    p.add_argument('--no_train', action='store_true', help='train nothing: the table and '
                   'learning curves of the runs as they stand (an unfinished run counts at its '
                   'last evaluation and is marked; a method with no run is left out)')
    p.add_argument('--train_kimg', type=int, help='training duration of each trained model in '
                   f'kimg (default {KIMG})')
    p.add_argument('--shared_args', default=None, help='flags given to all three trainers '
                   '(RealMix-only ones such as --warmup_kimg go to RealMix only); default: the '
                   "demo's digits settings " + ' '.join(DIGITS_FLAGS) + ' for digits, '
                   '"--augment=cifar10" otherwise')
    p.add_argument('--realmix_args', default=None, help='extra flags for realmix.py only (RealMix '
                   'and MixMatch)')
    p.add_argument('--fixmatch_args', default=None, help='extra flags for fixmatch.py only; '
                   'default ' + ' '.join(DIGITS_FIXMATCH_FLAGS) + ' for digits with the default '
                   '--shared_args, none otherwise')
    p.add_argument('--methods', default=','.join(DEFAULT_METHODS),
                   help=f'subset of {",".join(METHODS)} (RealMix is required; default '
                   f'{",".join(DEFAULT_METHODS)})')
    p.add_argument('--ls_knn', type=int, default=7, help='LabelSpreading knn: n_neighbors')
    p.add_argument('--ls_gamma', type=float, default=12.0, help='LabelSpreading rbf: gamma '
                   '(pixels scaled to [0, 1]; 12 was the best of 0.5..16 on digits@50 seeds 1-3, '
                   'so a strict reference)')
    args = p.parse_args(argv)
    parse_seeds(p, args)
    digits_defaults = args.dataset == 'digits' and args.shared_args is None and not args.preset
    args.digits_defaults = digits_defaults
    apply_preset(args)
    if args.quick:
        args.seed_list = args.seed_list[:1]
    if args.train_kimg < 1:
        p.error('--train_kimg must be at least 1')
    args.methods = {m.strip() for m in args.methods.split(',') if m.strip()}
    unknown = args.methods - set(METHODS)
    if unknown or 'realmix' not in args.methods:
        p.error(f'--methods={",".join(sorted(args.methods))}: choose among {", ".join(METHODS)}; '
                'realmix is required (the table compares against it)')
    if args.fixmatch_args is None:
        args.fixmatch_args = ' '.join(DIGITS_FIXMATCH_FLAGS) if digits_defaults else ''
    if args.shared_args is None:
        args.shared_args = ' '.join(DIGITS_FLAGS) if args.dataset == 'digits' else '--augment=cifar10'
    check_budget(p, args)
    return args


def flag_name(arg):
    """'batch' of '--batch=64'."""
    return arg.lstrip('-').partition('=')[0]


def flag_values(cmd):
    """{name: value} of the --name=value arguments of `cmd`; the last one wins, as with absl."""
    return {flag_name(a): a.partition('=')[2] for a in cmd if a.startswith('-')}


def merge_flags(base, override):
    """The trainer flags `base` with each flag of `override` in place of `base`'s flag of that
    name (new ones appended), so the result is what one would write out by hand."""
    new = {flag_name(a): a for a in override.split()}
    merged = [new.pop(flag_name(a), a) for a in base.split()]
    return ' '.join(merged + list(new.values()))


def apply_preset(args):
    """Fills the flags not given on the command line from --preset, then from DEFAULTS; merges
    the preset's trainer flags with those given (merge_flags). args.from_preset: the (compare.py
    flag, trainer flag) pairs the preset set (named in errors)."""
    preset = PRESETS.get(args.preset, {})
    args.from_preset = set()
    for key, value in preset.items():
        given = getattr(args, key)
        if key.endswith('_args'):
            args.from_preset |= {(key, flag_name(a)) for a in value.split()}
            args.from_preset -= {(key, flag_name(a)) for a in (given or '').split()}
            setattr(args, key, merge_flags(value, given or ''))
        elif given is None:
            setattr(args, key, value)
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def check_budget(p, args):
    """An argparse error when the trained runs could not run as scheduled: --train_kimg shorter
    than one report period or one batch, or cut short by --epochs (checked on each method's
    command, so a trainer flag counts wherever it was given)."""
    kimg = args.train_kimg
    for key in [k for k, *_ in TRAINED if k in args.methods]:
        values = flag_values(command(key, args, 1, '.'))
        origin = functools.partial(flag_origin, args, key)
        fix = functools.partial(where_to_change, args, key)
        try:  # without --batch, the trainer's batch (64) is below 1 kimg
            report, batch = int(values['report_kimg']), int(values.get('batch', 1))
            epochs = int(values.get('epochs', TRAINER_EPOCHS))
        except ValueError:
            continue  # not a number: the trainer names the flag
        if kimg < report:
            p.error(f'--train_kimg={kimg} is shorter than one report period (--report_kimg='
                    f'{report}, from {origin("report_kimg")}): the runs would end before their '
                    f'first scheduled evaluation; give --train_kimg={report} or more, or a '
                    f'smaller --report_kimg in {fix("report_kimg")}.')
        if kimg << 10 < batch:
            p.error(f'--train_kimg={kimg} ({kimg << 10} images) is less than one batch (--batch='
                    f'{batch}, from {origin("batch")}); give --train_kimg='
                    f'{math.ceil(batch / 1024)} or more, or a smaller --batch in {fix("batch")}.')
        if epochs * report < kimg:
            where = origin('epochs') if 'epochs' in values else "the trainers' default"
            p.error(f'--epochs={epochs} ({where}) stops each run at {epochs} x --report_kimg='
                    f'{report} = {epochs * report} kimg, before --train_kimg={kimg}; give '
                    f'--epochs={math.ceil(kimg / report)} or more in {fix("epochs")}.')


def where_to_change(args, key, flag):
    """Where to change a trainer flag: where it was given, or --shared_args for the preset's."""
    origin = flag_origin(args, key, flag)
    return '--shared_args' if 'preset' in origin else origin


def flag_origin(args, key, flag):
    """Which compare.py flag gave method `key`'s command its trainer flag `flag` (its own extra
    flags come last in the command, so they win)."""
    own = {'realmix': 'realmix_args', 'mixmatch': 'realmix_args', 'fixmatch': 'fixmatch_args'}
    name = next((n for n in (own.get(key), 'shared_args')
                 if n and flag in flag_values(getattr(args, n).split())), 'shared_args')
    return f'--preset={args.preset}' if (name, flag) in args.from_preset else f'--{name}'


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
    """The trainer flags every trained method gets: 8 evaluations (unless the shared flags set
    --report_kimg or --save_kimg: each flag once in the command), the last 2 checkpoints kept."""
    period = max(kimg // 8, 1)
    given = flag_values(shared)
    schedule = [f'--{flag}={period}' for flag in ('report_kimg', 'save_kimg') if flag not in given]
    return [f'--train_dir={train_dir}', f'--train_kimg={kimg}', *schedule, '--keep_ckpt=2',
            f'--seed={seed}', *shared]


def command(key, args, seed, train_dir):
    name, labels, kimg = args.dataset, args.labels, args.train_kimg
    algorithm = key if key in ALGORITHM_ONLY else 'realmix'   # whose own flags it takes
    shared, own = split_flags(args.shared_args, algorithm)
    common = common_flags(train_dir, kimg, seed, shared)
    ssl = f'--dataset={name}.{seed}@{labels}-{args.valid}'
    if key == 'realmix':
        return ['realmix.py', ssl, *common, *own, *args.realmix_args.split()]
    if key == 'mixmatch':
        # MixMatch's flags replace RealMix's --tsa and --percent_mask in place: each flag once.
        flags = merge_flags(' '.join([*own, args.realmix_args]), ' '.join(MIXMATCH_FLAGS))
        return ['realmix.py', ssl, *common, *flags.split()]
    if key == 'fixmatch':
        return ['fixmatch.py', ssl, *common, *own, *args.fixmatch_args.split()]
    script = dict((k, s) for k, _, s, _ in TRAINED)[key]
    if key in CLASSIC_ONLY:  # with compare's digits defaults, also its digits flags (they win)
        digits = DIGITS_CLASSIC_FLAGS.get(key, [])
        digits = digits if getattr(args, 'digits_defaults', False) else []
        return [script, ssl, *merge_flags(' '.join([*common, *own]), ' '.join(digits)).split()]
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
    values = flag_values(command('realmix', args, 1, '.'))
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


def same_value(recorded, given):
    """Whether a value of args.json and a flag's text agree (75.0 and '75' do)."""
    try:
        return float(recorded) == float(given)
    except (TypeError, ValueError):
        return str(recorded) == given


def existing_run(key, prefix, args, seed):
    """(test accuracy, accuracy on its own labeled images, run folder, kimg reached) of
    the run that train_one would train, as far as it got (--no_train); None if it never
    evaluated. The run is the folder whose args.json agrees with every flag of the command that it
    records (RealMix and MixMatch share a prefix and differ in --tsa/--percent_mask)."""
    train_dir = os.path.join(os.path.abspath(args.train_dir),
                             f'{args.dataset}.{seed}@{args.labels}_kimg{args.train_kimg}')
    cmd = command(key, args, seed, train_dir)
    values = flag_values(cmd[2:])
    dataset = cmd[1].split('=', 1)[1]
    for path in sorted(glob.glob(os.path.join(glob.escape(train_dir), glob.escape(dataset),
                                              prefix + '_*', 'args', 'args.json'))):
        recorded = json.load(open(path))
        if all(same_value(recorded[k], v) for k, v in values.items() if k in recorded):
            run_dir = os.path.dirname(os.path.dirname(path))
            curve = read_curve(run_dir)
            if curve:
                return curve[-1]['test'], curve[-1]['train_labeled'], run_dir, curve[-1]['kimg']
    return None


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
# Learning curves and collapse flags, from the runs' TensorBoard events.

CURVE_TAGS = {'train_labeled': 'accuracy_train_labeled', 'valid': 'accuracy_valid',
              'test': 'accuracy_test', 'seconds': 'monitors/period_seconds',
              'cpu_seconds': 'monitors/period_cpu_seconds'}
CURVE_COLUMNS = ['method', 'seed', 'kimg', 'hours', 'cpu_hours', 'train_labeled', 'valid', 'test']


def read_curve(run_dir):
    """The run's evaluations in order: [{kimg, hours, cpu_hours, train_labeled, valid, test}].
    hours and cpu_hours add up the time the trainer logged for each report period up to that
    evaluation (resumed sessions count, the gaps between them do not); None from the first
    evaluation without it on (a run older than that log). A missing accuracy is None."""
    from libml import events
    files = events.event_files(run_dir)
    scalars = {column: events.read_scalars(files, tag)[0] for column, tag in CURVE_TAGS.items()}
    rows, hours = [], {'hours': 0.0, 'cpu_hours': 0.0}
    for step in sorted(scalars['test']):
        for column, tag in (('hours', 'seconds'), ('cpu_hours', 'cpu_seconds')):
            known = hours[column] is not None and step in scalars[tag]
            hours[column] = hours[column] + scalars[tag][step] / 3600 if known else None
        rows.append(dict(kimg=step / 1024, **hours, **{c: scalars[c].get(step) for c in
                                                       ('train_labeled', 'valid', 'test')}))
    return rows


def fell(curve, column, limit):
    """'best% at kimg A -> last% at kimg B' when the last value of `column` is more than `limit`
    points below the best earlier one; else None."""
    points = [(row['kimg'], row[column]) for row in curve if row[column] is not None]
    if len(points) < 2:
        return None
    (best_kimg, best), (last_kimg, last) = max(points[:-1], key=lambda p: p[1]), points[-1]
    if best - last > limit:
        return f'{best:.1f}% at kimg {best_kimg:g} -> {last:.1f}% at kimg {last_kimg:g}'
    return None


def collapse_flags(results, curves, seeds):
    """(marks, notes): marks {(method, seed): 'BELOW/UNFIT/LATE marks'} of the trained runs that
    ended below the supervised baseline (semi-supervised methods), stopped fitting their own
    labels, or collapsed late; notes {mark: ['method seed S: what', ...]}.
    results: {method: [test accuracy per seed]}; curves: {(method, seed): read_curve rows}."""
    supervised = dict(zip(seeds, results.get('Supervised', [])))
    marks, notes = {}, {BELOW: [], UNFIT: [], LATE: []}
    for (method, seed), curve in curves.items():
        found = []
        test = curve[-1]['test']
        if method in SEMI_SUPERVISED and seed in supervised and test < supervised[seed]:
            found.append((BELOW, f'{test:.2f}% < {supervised[seed]:.2f}%'))
        for mark, column, limit in ((UNFIT, 'train_labeled', FIT_DROP),
                                    (LATE, 'test', COLLAPSE_DROP)):
            what = fell(curve, column, limit)
            if what:
                found.append((mark, what))
        for mark, what in found:
            marks[method, seed] = marks.get((method, seed), '') + mark
            notes[mark].append(f'{method} seed {seed}: {what}')
    return marks, notes


def write_curves(args, curves):
    """{train_dir}/curves_{name}_{labels}_kimg{K}.csv and .png of `curves` {(method, seed):
    read_curve rows}; returns their paths."""
    from libml.files import atomic_output
    stem = os.path.join(os.path.abspath(args.train_dir),
                        f'curves_{args.dataset}_{args.labels}_kimg{args.train_kimg}')
    text = lambda v, digits: '' if v is None else f'{v:.{digits}f}'
    with atomic_output(stem + '.csv') as tmp, open(tmp, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(CURVE_COLUMNS)
        for (method, seed), curve in curves.items():
            for r in curve:
                writer.writerow([method, seed, f'{r["kimg"]:g}', text(r['hours'], 4),
                                 text(r['cpu_hours'], 4), *(text(r[c], 2) for c in
                                                          ('train_labeled', 'valid', 'test'))])
    plot_curves(stem + '.png', args, curves)
    return stem + '.csv', stem + '.png'


def plot_curves(path, args, curves):
    """Test (solid) and validation (dashed) accuracy against kimg and against hours, one colour
    per method, a dot on each curve's last point (a one-evaluation run is a dot)."""
    import matplotlib
    matplotlib.use('Agg')  # no display: files only
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from libml.files import atomic_output
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    colours = {label: f'C{i}' for i, (_, label, *_) in enumerate(TRAINED)}
    names, drawn, untimed = {}, {}, 0
    for (method, seed), curve in curves.items():
        # MixMatch's curve is RealMix's run when their flags agree: drawn once, named for both.
        first = drawn.setdefault(id(curve), method)
        names.setdefault(first, [first])
        if first != method:
            names[first] += [method] * (method not in names[first])
            continue
        untimed += curve[-1]['hours'] is None
        for ax, x in zip(axes, ('kimg', 'hours')):
            for column, style in (('test', '-'), ('valid', '--')):
                points = [(r[x], r[column]) for r in curve
                          if r[x] is not None and r[column] is not None]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, style, color=colours[method], linewidth=1.2)
                    ax.plot(xs[-1:], ys[-1:], 'o', color=colours[method], markersize=3)
    axes[0].set_xlabel('kimg (1024 labeled images)')
    axes[1].set_xlabel('hours (training + evaluation, summed over sessions)')
    if untimed:
        axes[1].set_title(f'{untimed} run(s) logged no time: not shown here', fontsize=8)
    axes[0].set_ylabel('accuracy (%)')
    handles = [Line2D([], [], color=colours[m], label=' = '.join(n)) for m, n in names.items()]
    handles += [Line2D([], [], color='k', linestyle=s, label=t) for s, t in (('-', 'test'),
                                                                           ('--', 'validation'))]
    axes[0].legend(handles=handles, fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)  # where training starts: a short curve is seen as short
    fig.suptitle(f'{args.dataset}, {args.labels} labels, {args.train_kimg} kimg, seeds '
                 f'{",".join(map(str, args.seed_list))}', fontsize=10)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format='png', dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# The table.

def mean_std(values):
    if len(values) == 1:
        return f'{values[0]:6.2f}        '
    return f'{statistics.mean(values):6.2f} ± {statistics.stdev(values):5.2f}'


def duration(seconds):
    seconds = int(round(seconds))
    return f'{seconds // 60:d}m{seconds % 60:02d}s' if seconds >= 60 else f'{seconds}s'


def print_table(args, results, times, sizes, underfit, wall, flags=({}, {}), untimed=()):
    """flags: collapse_flags' (marks, notes); untimed: the methods whose time is their
    subprocesses' wall time (runs that logged none)."""
    seeds = args.seed_list
    methods = list(results)
    realmix = results['RealMix']
    nl, nu, nt = sizes
    marks, notes = flags
    pad = max(map(len, marks.values()), default=0)  # room for the marks after each number
    fixmatch_extra = 'FixMatch' in results and args.fixmatch_args
    print(f'\n== {args.dataset}: {args.labels} labels, split seeds {",".join(map(str, seeds))}; '
          f'trained models {args.train_kimg} kimg each '
          f'{f"(--preset={args.preset}) " if args.preset else ""}(shared flags: {args.shared_args}'
          f'{"; RealMix also " + args.realmix_args if args.realmix_args else ""}'
          f'{"; FixMatch also " + args.fixmatch_args if fixmatch_extra else ""}'
          f'{classic_extra(args, results)})')
    print(f'   {nl} labeled + {nu} unlabeled training images (RealMix also holds out {args.valid} '
          f'validation images), test accuracy (%) on {nt} {args.dataset}-test images')
    width = max(len(m) for m in methods) + 2
    head = f'{"method":<{width}}' + ''.join(f'{"seed " + str(s):>9}{"":{pad}}' for s in seeds)
    head += f'  {"mean ± std":>15}  {"RealMix − method":>17}  {"time (all seeds)":>16}'
    print(head)
    print('-' * len(head))
    for m in methods:
        row = f'{m + ("*" if m in underfit else ""):<{width}}' + ''.join(
            f'{a:9.2f}{marks.get((m, s), ""):<{pad}}' for s, a in zip(seeds, results[m]))
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
    for mark, what in ((BELOW, 'below the supervised baseline of the same seed (test accuracy)'),
                       (UNFIT, 'stopped fitting its own labeled images: their accuracy ended more '
                               f'than {FIT_DROP:g} points below its best earlier evaluation'),
                       (LATE, 'collapsed late: its final test accuracy is more than '
                              f'{COLLAPSE_DROP:g} points below its best evaluation')):
        if notes.get(mark):
            print(f'{mark} {what}: {"; ".join(notes[mark])}.')
    ledger = f'; {", ".join(untimed)}: their subprocesses\' wall time (no time logged)' * bool(untimed)
    print(f'Wall time of this comparison: {duration(wall)}. Trained methods: the training and '
          f'evaluation time their runs logged, over all sessions, also when reused{ledger}.')
    if args.dataset == 'digits' and args.labels == 50:
        print_goals(args, results, underfit)


def classic_extra(args, results):
    """'; VAT also --vat_eps=0.87...': the digits flags of the classic methods in the table."""
    if not getattr(args, 'digits_defaults', False):
        return ''
    return ''.join(f'; {label} also {" ".join(DIGITS_CLASSIC_FLAGS[key])}'
                   for key, label, *_ in TRAINED if key in DIGITS_CLASSIC_FLAGS and label in results)


def print_goals(args, results, underfit):
    """The goals of the digits benchmark, judged only on a full run (>= 3 seeds, not --quick)."""
    stated = (f'RealMix median >= {GOAL_REALMIX:g}% and above every reference on every seed; '
              f'supervised median >= {GOAL_SUPERVISED:g}%; MixUp >= supervised; FixMatch median '
              f'>= {GOAL_FIXMATCH:g}% and above RealMix on every seed; each classic method\'s '
              'median above supervised')
    if args.quick or len(args.seed_list) < GOAL_SEEDS:
        why = '--quick runs one seed' if args.quick else f'{len(args.seed_list)} seed(s) ran'
        print(f'Goals ({stated}): not judged ({why}; they need {GOAL_SEEDS} seeds: '
              'python benchmarks/compare.py --seeds=1,2,3).')
        return
    realmix = results['RealMix']
    median = statistics.median(realmix)
    # The references are the baselines: the other semi-supervised methods have goals of their own.
    not_above = [m for m, v in results.items() if m not in SEMI_SUPERVISED
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
    classic = [label for key, label, *_ in TRAINED if key in CLASSIC_ONLY and label in results]
    if classic and 'Supervised' in results:
        medians = ', '.join(f'{m} {statistics.median(results[m]):.2f}%' for m in classic)
        below = [m for m in classic if statistics.median(results[m]) <= sup]
        checks.append((f'each classic method\'s median above supervised ({sup:.2f}%)', not below,
                       medians))
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
    if not args.no_train:
        ensure_splits(args, env)
    results, times, sizes, underfit = {}, {}, None, {}
    curves, untimed = {}, []  # {(method, seed): read_curve rows}; methods timed by the ledger
    unfinished, missing = [], set()  # --no_train: runs short of --train_kimg; methods without one
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
                curves[label, seed] = curves['RealMix', seed]  # the same object: plotted once
            else:
                if args.no_train:
                    found = existing_run(key, prefix, args, seed)
                    if found is None and key == 'realmix':  # the table compares against it
                        sys.exit(f'compare: error: --no_train: RealMix has not evaluated yet on seed '
                                 f'{seed}; run the same command without --no_train to train.')
                    if found is None:
                        missing.add(label)
                        continue
                    acc, fit, run_dir, kimg = found
                    sec = 0  # the ledger's seconds are for finished runs only
                    if kimg < args.train_kimg:
                        unfinished.append(f'{label} seed {seed}: {kimg:g} of {args.train_kimg} kimg')
                else:
                    acc, sec, fit, run_dir = train_one(key, label, prefix, args, seed, env)
                curve = curves[label, seed] = read_curve(run_dir)
                if curve[-1]['hours'] is not None:
                    sec = curve[-1]['hours'] * 3600
                elif label not in untimed:
                    untimed.append(label)
            fits[label] = fit
            results.setdefault(label, []).append(acc)
            if fit < UNDERFIT:
                underfit.setdefault(label, []).append((seed, fit))
            times[label] = times.get(label, 0) + sec
        if 'sklearn' in args.methods and not args.no_train:
            refs, *sizes = sklearn_references(args, seed)
            for label, (acc, sec) in refs.items():
                print(f'-- {label}, seed {seed}: {acc:.2f}% ({sec:.1f} s)')
                results.setdefault(label, []).append(acc)
                times[label] = times.get(label, 0) + sec
    if sizes is None:
        from libml import datasets, pipeline
        ds = datasets.resolve(f'{args.dataset}.{args.seed_list[0]}@{args.labels}-{args.valid}')
        sizes = [len(pipeline.load_arrays(p, ds.shape)[1]) for p in (ds.labeled, ds.unlabeled, ds.test)]
    if args.no_train:
        for label in missing:  # a method must have a value on every seed to be in the table
            results.pop(label, None)
            curves = {k: v for k, v in curves.items() if k[0] != label}
        if missing:
            print(f'Not in the table (no evaluation yet on every seed): {", ".join(sorted(missing))}.')
    flags = collapse_flags(results, curves, args.seed_list)
    print_table(args, results, times, sizes, underfit, time.time() - start, flags, untimed)
    if unfinished:
        print('UNFINISHED runs, shown at their last evaluation (not final results; the same command '
              'without --no_train resumes them): ' + '; '.join(unfinished) + '.')
    print('Learning curves: ' + ', '.join(write_curves(args, curves)))


if __name__ == '__main__':
    main()
