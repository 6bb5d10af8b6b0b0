#!/usr/bin/env python3
"""Does RealMix still beat the supervised baseline when the unlabeled data hold classes the
labeled data lack? (The class-mismatch claim of arXiv 1912.08766; README 2.3's recipe.)

    python benchmarks/mismatch.py                 # digits, 10 labels per class, seeds 1,2 (~1 h)
    python benchmarks/mismatch.py --quick         # one seed, levels 0 and 100 % (a smoke test)

Data (for every split seed S; the entry points as subprocesses, the filters in this process
through filter_dataset.py's library call, libml/class_filter.py):
  scripts/create_datasets.py digits (when missing) and scripts/create_split.py --class_balance:
    {name}.S@{10 N}: N labels of each class of a 10-class dataset (more classes: N of each).
  filter_dataset.py --class_filter=2,3,4,5,6,7 on the label file, the test file and the
    unlabeled file -> {name}6: six classes, labels renumbered 0..5 (the model has 6 outputs;
    the class map and names are recorded, so per-class accuracy names the real classes).
  filter_dataset.py --class_filter=<level> on the unlabeled file, per mismatch level (README 2.3):
    0 %: 4,5,6,7   25 %: 0,5,6,7   50 %: 0,1,6,7   75 %: 0,1,8,7   100 %: 0,1,8,9
    (out-of-distribution classes get the label -1: no class of the model).
  Then, in this process, the unlabeled file of {name}6_mismatch{L}.S@{10 N} is assembled from
  those files' records, as bytes:
    first the validation images: the first V images of each of the 6 kept classes of the
      split's unlabeled file (held-out labeled in-distribution images, the same at every level;
      never trained on: the trainer's -{6 V} takes them for validation);
    then the level's unlabeled images minus those, M of each of its 4 classes (M = the smallest
      class count over all levels, a seeded draw), so every level has 4 M unlabeled images and
      exactly L % of them are out of distribution: only the mismatch changes.
Methods (--methods; each trained --train_kimg kimg with the same trainer flags and seed S):
  Supervised      fully_supervised/fs_baseline.py on the 6 N labeled images (once per seed:
                  no unlabeled data, so the same at every level)
  MixMatch        realmix.py --tsa=none --percent_mask=-1
  FixMatch        fixmatch.py (its own optimizer defaults; --fixmatch_args adds flags)
  RealMix         realmix.py --tsa=linear_schedule --percent_mask=p
  LabelSpreading  scikit-learn, knn kernel with its default 7 neighbours (untuned), on the same
                  labeled + unlabeled images, pixels / 255 (benchmarks/compare.py's reference)
RealMix's mask fraction p is chosen on validation, never on the test set: every candidate of
--mask_candidates is trained on the first seed at every level, and the one with the highest
validation accuracy (its last evaluation, mean over the levels; ties: the smaller p) is used for
every seed; the first seed's RealMix runs are those of the chosen candidate.

Output: a table of test accuracy (mean ± std over seeds) per method and level and the paired
difference to the supervised baseline, written to {out}/{name}_mismatch.csv; a plot of accuracy
against mismatch (one line per method, error bars = std over seeds) in {name}_mismatch.png; all
numbers and the mask selection in {name}_mismatch.json. RealMix's mask against the known
out-of-distribution images (label -1), per level and seed, in {name}_mismatch_mask.csv and
printed: precision (of the dropped examples, the share out of distribution) and recall (of the
out-of-distribution examples, the share dropped), the means of the trainer's ood/* monitors over
the run's reports (libml/summaries.py). At 100 % every training image is out of distribution, so
recall = the dropped share there by construction: the levels between are the informative ones.
Runs go to
{train_dir}/{name}6.S@{10 N}_kimg{K}/; re-running the same command reuses finished runs and
resumes interrupted ones (benchmarks/compare.py's ledger), and reuses the data files.
"""
import argparse
import collections
import csv
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))

import compare  # noqa: E402  (the ledger, subprocess runs, event reading and table helpers)

TOOL = 'mismatch'
KEPT = [2, 3, 4, 5, 6, 7]              # the labeled (in-distribution) classes of README 2.3
LEVELS = {0: [4, 5, 6, 7], 25: [0, 5, 6, 7], 50: [0, 1, 6, 7], 75: [0, 1, 8, 7],
          100: [0, 1, 8, 9]}           # mismatch % -> the classes of the unlabeled set
KIMG = 24
# A quarter-width, half-depth Wide-ResNet (16 filters, 2 blocks per stage) learns 8x8 digits as
# well as the full one in about half the time (digits.1@100, RealMix 16 kimg, 2 shared cores:
# 97.2% vs 96.8% test, 53 s vs 97 s), so the default run fits in an hour.
DIGITS_ARGS = '--augment=svhn --batch=32 --filters=16 --repeat=2 --scales=2'
METHODS = ['Supervised', 'MixMatch', 'RealMix', 'FixMatch', 'LabelSpreading']
REQUIRED = ('Supervised', 'RealMix')   # the claim compares these two
MARKERS = dict(zip(METHODS, 'sod^v'))
LS_LABEL = 'LabelSpreading knn k=7'     # compare.sklearn_references' knn row with --ls_knn=7


def parse_args(argv=None):
    p = compare.benchmark_parser(__doc__, '1,2', 'experiments/mismatch')
    p.add_argument('--labels_per_class', type=int, default=10, help='labeled images per class')
    p.add_argument('--valid_per_class', type=int, default=10, help='validation images per kept '
                   'class (held-out labeled images from the split\'s unlabeled file)')
    p.add_argument('--levels', default='0,25,50,75,100', help='mismatch levels in %% (of 0, 25, '
                   '50, 75, 100)')
    p.add_argument('--mask_candidates', default='0.25,0.5', help="RealMix's --percent_mask "
                   'candidates, chosen on the first seed by validation accuracy')
    p.add_argument('--tsa', default='linear_schedule', help="RealMix's --tsa")
    p.add_argument('--train_kimg', type=int, default=None, help=f'kimg per trained model '
                   f'(default {KIMG}; 4 with --quick)')
    p.add_argument('--methods', default=','.join(m.lower() for m in METHODS),
                   help=f'subset of {",".join(m.lower() for m in METHODS)} (supervised and realmix '
                   'are required)')
    p.add_argument('--fixmatch_args', default='', help='extra flags for fixmatch.py only')
    p.add_argument('--quick', action='store_true', help='first seed, levels 0 and 100, 4 kimg: a '
                   'smoke test whose numbers mean nothing')
    p.add_argument('--out', default=None, help='folder of the CSV, PNG and JSON (default: '
                   '--train_dir)')
    p.add_argument('--shared_args', default=None, help='flags given to every trainer (RealMix-only '
                   f'ones go to realmix.py only); default "{DIGITS_ARGS}" for digits, '
                   '"--augment=cifar10" otherwise')
    p.add_argument('--realmix_args', default=None, help='extra flags for realmix.py only '
                   '(MixMatch and RealMix); default --warmup_kimg=TRAIN_KIMG/2')
    args = p.parse_args(argv)
    compare.parse_seeds(p, args)     # also checks --dataset
    args.level_list = _ints(p, 'levels', args.levels)
    by_key = {m.lower(): m for m in METHODS}
    chosen = {x.strip().lower() for x in args.methods.split(',') if x.strip()}
    if chosen - set(by_key) or not {m.lower() for m in REQUIRED} <= chosen:
        p.error(f'--methods={args.methods}: choose among {",".join(by_key)}, with supervised and '
                'realmix')
    args.method_list = [m for m in METHODS if m.lower() in chosen]
    if set(args.level_list) - set(LEVELS):
        p.error(f'--levels={args.levels}: choose among {",".join(map(str, LEVELS))}')
    try:
        args.masks = sorted({float(x) for x in args.mask_candidates.split(',') if x.strip()})
    except ValueError:
        p.error(f'--mask_candidates={args.mask_candidates!r}: expected numbers, e.g. 0.25,0.5')
    if not args.masks or not all(0 < m < 1 for m in args.masks):
        p.error(f'--mask_candidates={args.mask_candidates!r}: give fractions in (0, 1)')
    if args.quick:
        args.seed_list, args.masks = args.seed_list[:1], args.masks[:2]
        args.level_list = [level for level in args.level_list if level in (0, 100)] or args.level_list[:1]
    args.train_kimg = args.train_kimg or (4 if args.quick else KIMG)
    for flag in ('labels_per_class', 'valid_per_class', 'train_kimg'):
        if getattr(args, flag) < 1:
            p.error(f'--{flag} must be at least 1')
    if args.shared_args is None:
        args.shared_args = DIGITS_ARGS if args.dataset == 'digits' else '--augment=cifar10'
    if args.realmix_args is None:
        args.realmix_args = f'--warmup_kimg={max(args.train_kimg // 2, 1)}'
    for text in (args.shared_args, args.realmix_args):
        if any(a.lstrip('-').split('=')[0] in ('tsa', 'percent_mask') for a in text.split()):
            p.error('--shared_args/--realmix_args: --tsa and --percent_mask are set per method '
                    '(use --tsa and --mask_candidates)')
    args.out = args.out or args.train_dir
    return args


def _ints(parser, flag, text):
    try:
        values = [int(x) for x in text.split(',') if x.strip()]
    except ValueError:
        parser.error(f'--{flag}={text!r}: expected comma-separated integers')
    if not values:
        parser.error(f'--{flag}: give at least one value')
    return values


# ----------------------------------------------------------------------------------------------
# Data.

class Names:
    """Dataset names and paths of one benchmark: {name}6 and its mismatch levels."""

    def __init__(self, args, ml_data, nclass):
        self.ml_data, self.name = ml_data, args.dataset
        self.base = f'{args.dataset}6'
        self.size = args.labels_per_class * nclass          # labels of the 10-class split
        self.valid = args.valid_per_class * len(KEPT)

    def split(self, seed):
        return f'{self.name}.{seed}@{self.size}'

    def stem(self, seed, level=None):
        return f'{self.base if level is None else f"{self.base}_mismatch{level}"}.{seed}@{self.size}'

    def ssl(self, *parts):
        return os.path.join(self.ml_data, 'SSL', *parts)

    def dataset(self, seed, level):
        """What realmix.py trains on: {name}6_mismatch{L}.S@{size}-{valid}."""
        return f'{self.stem(seed, level)}-{self.valid}'


def filter_file(classes, source, target, title):
    """What `filter_dataset.py --class_filter=CLASSES --filter_dataset=SOURCE --save_name=TARGET`
    does, in this process (its library call: each entry point would start TensorFlow again)."""
    if not os.path.exists(target + '.json'):
        from libml import class_filter
        print(f'-- {title}', flush=True)
        kept, total = class_filter.filter_records(source, target, ','.join(map(str, classes)))
        print(f'   {kept} of {total} records -> {target}', flush=True)


def prepare_seed(args, names, seed, env):
    """The filtered files of split `seed` and the unlabeled file of every level; returns
    {level: (unlabeled images, out-of-distribution images)} of the training images."""
    from libml import records
    split_unlabel = names.ssl(f'{names.split(seed)}-unlabel.tfrecord')
    filter_file(KEPT, names.ssl(f'{names.split(seed)}-label.tfrecord'),
                names.ssl(f'{names.stem(seed)}-label.tfrecord'),
                f'Labeled images of {names.base}.{seed}: classes {KEPT} -> 0..5')
    # The kept classes of the unlabeled file: its first images are the validation images.
    filter_file(KEPT, split_unlabel, names.ssl(f'{names.stem(seed)}-unlabel.tfrecord'),
                f'In-distribution unlabeled images of {names.base}.{seed} (validation pool)')
    for level in args.level_list:
        filter_file(LEVELS[level], split_unlabel,
                    names.ssl(f'{names.stem(seed, level)}-filtered.tfrecord'),
                    f'Unlabeled images of mismatch {level}%: classes {LEVELS[level]}')
    labels = np.concatenate([b['label'] for b in records.read_records(split_unlabel)])
    valid = validation_positions(labels, args.valid_per_class, split_unlabel)
    per_class = draw_size(labels, valid)
    sizes = {}
    for level in args.level_list:
        target = names.ssl(f'{names.stem(seed, level)}-unlabel.tfrecord')
        facts = {'level': level, 'classes': LEVELS[level], 'valid': len(valid),
                 'per_class': per_class, 'seed': seed}
        meta = records.read_meta(target) if os.path.exists(target + '.json') else {}
        if meta.get('mismatch') != facts:
            assemble_level(names, seed, level, labels, valid, per_class, facts)
        ood = per_class * sum(c not in KEPT for c in LEVELS[level])
        sizes[level] = (per_class * len(LEVELS[level]), ood)
    return sizes


def validation_positions(labels, per_class, path):
    """Positions [6 V] in the split's unlabeled file of the first `per_class` images of each
    kept class: the first 6 V images of its kept-class filtering, since filtering keeps order."""
    positions = np.flatnonzero(np.isin(labels, KEPT))[:per_class * len(KEPT)]
    counts = collections.Counter(labels[positions].tolist())
    if any(counts[c] != per_class for c in KEPT):
        from libml.utils import UserError
        raise UserError(f'--valid_per_class={per_class}: the first {len(positions)} kept-class '
                        f'images of {path} are not {per_class} of each class ({dict(counts)}); '
                        'use a smaller value.')
    return positions


def draw_size(labels, valid):
    """Unlabeled images drawn from each class at every level: the smallest count, over the
    classes of all levels, of the images that are not validation images."""
    rest = np.delete(labels, valid)
    return int(min((rest == c).sum() for c in set().union(*LEVELS.values())))


def assemble_level(names, seed, level, labels, valid, per_class, facts):
    """Writes {name}6_mismatch{L}.S@{size}-unlabel: the validation images, then `per_class`
    images of each class of the level (a draw seeded by (seed, level)), as filtered (bytes)."""
    from libml import records
    pool = list(records.read_records(names.ssl(f'{names.stem(seed)}-unlabel.tfrecord')))
    pool_raw = np.concatenate([b['raw'] for b in pool])[:len(valid)]
    pool_labels = np.concatenate([b['label'] for b in pool])[:len(valid)]
    filtered_path = names.ssl(f'{names.stem(seed, level)}-filtered.tfrecord')
    batches = list(records.read_records(filtered_path))
    raw = np.concatenate([b['raw'] for b in batches])
    new_labels = np.concatenate([b['label'] for b in batches])
    # The filtered file holds, in order, the split's images whose class is in the level.
    origin = np.flatnonzero(np.isin(labels, LEVELS[level]))
    if len(origin) != len(raw):   # made from another split of that name (recut since)
        from libml.utils import UserError
        raise UserError(f'{filtered_path} holds {len(raw)} images, not the {len(origin)} of classes '
                        f'{LEVELS[level]} in {names.split(seed)}-unlabel: it was filtered from an '
                        'earlier split; delete it (and its .json) and run again.')
    rng = np.random.default_rng([seed, level])
    chosen = []
    for c in LEVELS[level]:
        candidates = np.flatnonzero((labels[origin] == c) & ~np.isin(origin, valid))
        chosen.append(rng.choice(candidates, per_class, replace=False))
    chosen = np.sort(np.concatenate(chosen))
    meta = records.read_meta(filtered_path)
    shape = (meta['height'], meta['width'], meta['channels'])
    target = names.ssl(f'{names.stem(seed, level)}-unlabel.tfrecord')
    with records.RecordWriter(target, shape, nclass=meta['nclass'], class_names=meta['class_names'],
                           extra_meta={'class_map': meta['class_map'], 'mismatch': facts}) as w:
        for r, label in zip(pool_raw.tolist(), pool_labels.tolist()):
            w.write_serialized(r, label)
        for r, label in zip(raw[chosen].tolist(), new_labels[chosen].tolist()):
            w.write_serialized(r, label)
    print(f'wrote {target}: {len(valid)} validation + {len(chosen)} unlabeled images '
          f'({per_class} of each of classes {LEVELS[level]})')


# ----------------------------------------------------------------------------------------------
# Runs.

def trained(args, names, seed, env, key, title, cmd, prefix):
    """One trained run through compare.py's ledger: {'test', 'train', 'valid', 'seconds'}."""
    train_dir = seed_dir(args, names, seed)
    test, seconds, fit, run_dir = compare.run_trained(key, title, prefix, cmd, train_dir,
                                                      args.train_kimg << 10, env, TOOL)
    return {'test': test, 'train': fit, 'valid': last_scalar(run_dir, 'accuracy_valid'),
            'seconds': seconds, 'mask': {name: mean_scalar(run_dir, tag) for name, tag in OOD_TAGS}}


def seed_dir(args, names, seed):
    return os.path.join(os.path.abspath(args.train_dir), f'{names.stem(seed)}_kimg{args.train_kimg}')


def last_scalar(run_dir, tag):
    """The value of `tag` at the run's last evaluation, or None."""
    from libml import events
    by_step, _, _ = events.read_scalars(events.event_files(run_dir), tag)
    return by_step[max(by_step)] if by_step else None


# The trainer's monitors of the mask against the known out-of-distribution images (label -1):
# libml/summaries.py, written per report period of runs trained since they exist.
OOD_TAGS = (('share', 'ood/share'), ('precision', 'ood/mask_precision'),
            ('recall', 'ood/mask_recall'), ('kept', 'collapse/mask_rate'))


def mean_scalar(run_dir, tag):
    """The mean of `tag` over the run's reports (periods of equal length), or None."""
    from libml import events
    by_step, _, _ = events.read_scalars(events.event_files(run_dir), tag)
    return statistics.mean(by_step.values()) if by_step else None


def commands(args, names, seed, algorithm='realmix'):
    """(trainer flags of every method, `algorithm`'s own flags) of split `seed`."""
    shared, own = compare.split_flags(args.shared_args, algorithm)
    common = compare.common_flags(seed_dir(args, names, seed), args.train_kimg, seed, shared)
    extra = args.realmix_args if algorithm == 'realmix' else args.fixmatch_args
    return common, [*own, *extra.split()]


def supervised(args, names, seed, env):
    common, _ = commands(args, names, seed)
    cmd = ['fully_supervised/fs_baseline.py', f'--dataset={names.base}-0',
           f'--train_record=SSL/{names.stem(seed)}-label.tfrecord',
           f'--test_record={names.base}-test.tfrecord', *common]
    return trained(args, names, seed, env, 'supervised', f'Supervised, seed {seed}', cmd,
                   'FSBaseline')


def semi_supervised(args, names, seed, level, env, mask=None):
    """MixMatch (mask None) or RealMix with --percent_mask=mask, at one level."""
    common, realmix_only = commands(args, names, seed)
    method = ['--tsa=none', '--percent_mask=-1'] if mask is None else [
        f'--tsa={args.tsa}', f'--percent_mask={mask:g}']
    cmd = ['realmix.py', f'--dataset={names.dataset(seed, level)}', *common, *realmix_only, *method]
    key = f'mixmatch_{level}' if mask is None else f'realmix_p{mask:g}_{level}'
    title = (f'{"MixMatch" if mask is None else f"RealMix p={mask:g}"}, mismatch {level}%, '
             f'seed {seed}')
    return trained(args, names, seed, env, key, title, cmd, 'RealMix')


def fixmatch(args, names, seed, level, env):
    common, own = commands(args, names, seed, 'fixmatch')
    cmd = ['fixmatch.py', f'--dataset={names.dataset(seed, level)}', *common, *own]
    return trained(args, names, seed, env, f'fixmatch_{level}',
                   f'FixMatch, mismatch {level}%, seed {seed}', cmd, 'FixMatch')


def train_method(args, names, seed, level, env, method, mask):
    """One semi-supervised method's result at one level (RealMix with the chosen mask)."""
    if method == 'LabelSpreading':
        return label_spreading(args, names, seed, level)
    if method == 'FixMatch':
        return fixmatch(args, names, seed, level, env)
    return semi_supervised(args, names, seed, level, env, mask if method == 'RealMix' else None)


def label_spreading(args, names, seed, level):
    ref = argparse.Namespace(dataset=f'{names.base}_mismatch{level}', labels=names.size,
                             valid=names.valid, ls_knn=7, ls_gamma=12.0)
    refs, *_ = compare.sklearn_references(ref, seed)
    accuracy, seconds = refs[LS_LABEL]
    print(f'-- LabelSpreading, mismatch {level}%, seed {seed}: {accuracy:.2f}% ({seconds:.1f} s)')
    return {'test': accuracy, 'train': None, 'valid': None, 'seconds': seconds}


def choose_mask(args, names, env, results):
    """RealMix's mask fraction: the candidate with the best mean validation accuracy over the
    levels on the first seed (ties: the smaller). Fills results['RealMix'] for that seed."""
    seed = args.seed_list[0]
    scores = {}
    for mask in args.masks:
        runs = {level: semi_supervised(args, names, seed, level, env, mask)
                for level in args.level_list}
        scores[mask] = (statistics.mean(r['valid'] for r in runs.values()), runs)
    best = max(args.masks, key=lambda m: (scores[m][0], -m))
    for level, run in scores[best][1].items():
        results['RealMix'][level][seed] = run
    print(f'\n== RealMix mask fraction, chosen on validation (seed {seed}, mean over levels '
          f'{",".join(map(str, args.level_list))}):')
    for mask in args.masks:
        per_level = '  '.join(f'{level}%: {r["valid"]:.1f}' for level, r in scores[mask][1].items())
        print(f'   p={mask:g}: {scores[mask][0]:.2f}% ({per_level}){"  <- chosen" * (mask == best)}')
    return best, {f'{m:g}': {'mean_valid': s, 'valid': {str(lv): r['valid'] for lv, r in runs.items()}}
                  for m, (s, runs) in scores.items()}


# ----------------------------------------------------------------------------------------------
# Output.

def summarize(args, results):
    """Rows of the table: one per method and level, with mean, std and the paired difference to
    the supervised baseline over the seeds."""
    rows = []
    for method in args.method_list:
        for level in args.level_list:
            acc = [results[method][level][s]['test'] for s in args.seed_list]
            diff = [a - results['Supervised'][level][s]['test']
                    for a, s in zip(acc, args.seed_list)]
            rows.append({'method': method, 'mismatch_pct': level, 'seeds': len(acc),
                         'mean': statistics.mean(acc), 'std': _std(acc),
                         'minus_supervised_mean': statistics.mean(diff),
                         'minus_supervised_std': _std(diff),
                         'per_seed': ' '.join(f'{a:.2f}' for a in acc)})
    return rows


def _std(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


CSV_COLUMNS = ['method', 'mismatch_pct', 'seeds', 'mean', 'std', 'minus_supervised_mean',
               'minus_supervised_std', 'per_seed']


def write_csv(path, rows):
    from libml.files import atomic_output
    with atomic_output(path) as tmp, open(tmp, 'w', newline='') as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f'{v:.2f}' if isinstance(v, float) else v for k, v in row.items()})


MASK_COLUMNS = ['mismatch_pct', 'seed', 'ood_share', 'dropped', 'precision', 'recall']


def mask_rows(args, results):
    """RealMix's mask against the out-of-distribution images, per level and seed: the shares of
    the run's reports averaged (None where the run predates the monitors or has no OOD image)."""
    rows = []
    for level in args.level_list:
        for seed in args.seed_list:
            m = results['RealMix'][level][seed]['mask']
            rows.append({'mismatch_pct': level, 'seed': seed, 'ood_share': m['share'],
                         'dropped': None if m['kept'] is None else 1 - m['kept'],
                         'precision': m['precision'], 'recall': m['recall']})
    return rows


def write_mask_csv(path, rows):
    from libml.files import atomic_output
    with atomic_output(path) as tmp, open(tmp, 'w', newline='') as f:
        writer = csv.DictWriter(f, MASK_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: '' if v is None else f'{v:.4f}' if isinstance(v, float) else v
                             for k, v in row.items()})


def print_mask(rows, mask):
    """The mask's precision and recall beside what a mask blind to the classes would get."""
    print(f'\nRealMix\'s mask (p={mask:g}: drops the least confident share of each unlabeled '
          'batch) against the out-of-distribution images (label -1), mean over the run\'s reports:')
    print(f'{"mismatch":>9}{"seed":>6}{"OOD share":>11}{"dropped":>9}{"precision":>11}'
          f'{"recall":>8}   (a blind mask: precision = OOD share, recall = dropped)')
    pct = lambda v: f'{100 * v:.1f}%' if v is not None else '-'
    for r in rows:
        print(f'{r["mismatch_pct"]:>8}%{r["seed"]:>6}{pct(r["ood_share"]):>11}{pct(r["dropped"]):>9}'
              f'{pct(r["precision"]):>11}{pct(r["recall"]):>8}')
    if any(r['recall'] is None and r['mismatch_pct'] > 0 for r in rows):
        print('  -: not recorded (a run trained before the trainer wrote ood/*: retrain to see).')


def write_plot(path, args, rows, title):
    """Accuracy against mismatch %, one line per method, error bars = std over seeds."""
    import matplotlib
    matplotlib.use('Agg')  # no display: files only
    import matplotlib.pyplot as plt
    from libml.files import atomic_output
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for method in args.method_list:
        marker = MARKERS[method]
        mine = [r for r in rows if r['method'] == method]
        ax.errorbar([r['mismatch_pct'] for r in mine], [r['mean'] for r in mine],
                    yerr=[r['std'] for r in mine], marker=marker, capsize=3, label=method,
                    linestyle='--' if method == 'Supervised' else '-')
    ax.set_xlabel('class mismatch of the unlabeled data (%)')
    ax.set_ylabel('test accuracy (%)')
    ax.set_xticks(args.level_list)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format='png', dpi=120)
    plt.close(fig)


def print_table(args, rows, mask, sizes, wall, seconds):
    levels = args.level_list
    print(f'\nTest accuracy (%), mean ± std over seeds {",".join(map(str, args.seed_list))}; '
          'second line: minus Supervised (paired by seed)')
    head = f'{"method":<16}' + ''.join(f'{f"{lv}% mismatch":>17}' for lv in levels) + f'{"time":>9}'
    print(head + '\n' + '-' * len(head))
    for method in args.method_list:
        mine = {r['mismatch_pct']: r for r in rows if r['method'] == method}
        name = f'RealMix p={mask:g}' if method == 'RealMix' else method
        cells = ''.join(f'{_cell(mine[lv]):>17}' for lv in levels)
        print(f'{name:<16}{cells}{compare.duration(seconds[method]):>9}')
        if method != 'Supervised':
            print(f'{"":<16}' + ''.join(f'{mine[lv]["minus_supervised_mean"]:+17.2f}' for lv in levels))
    print('-' * len(head))
    print('Unlabeled training images per level (out of distribution): ' + ', '.join(
        f'{lv}%: {sizes[lv][0]} ({sizes[lv][1]})' for lv in levels))
    print(f'Wall time: {compare.duration(wall)} (reused runs count their own earlier time in the '
          'time column).')


def _cell(row):
    return f'{row["mean"]:.2f}' + (f' ± {row["std"]:.2f}' if row['seeds'] > 1 else '')


def verdict(args, rows):
    """The paper's claim, as measured: lines of text."""
    mean = {(r['method'], r['mismatch_pct']): r['mean'] for r in rows}
    levels = args.level_list
    below = [lv for lv in levels if mean['RealMix', lv] < mean['Supervised', lv]]
    lines = [f'RealMix >= Supervised at every mismatch level (means): '
             f'{"YES" if not below else "NO (below at " + ", ".join(f"{lv}%" for lv in below) + ")"}']
    if len(levels) > 1:
        lo, hi = min(levels), max(levels)
        drops = ', '.join(f'{m} {mean[m, lo] - mean[m, hi]:+.2f} points'
                          for m in args.method_list if (m, lo) in mean and m != 'Supervised')
        lines.append(f'Drop from {lo}% to {hi}% mismatch: {drops} (positive = accuracy lost)')
    if len(args.seed_list) < 2:
        lines.append('(One seed: no spread; the numbers are not evidence.)')
    return lines


def main():
    args = parse_args()
    env = compare.subprocess_env()
    from libml import records
    from libml.files import write_json
    from libml.utils import UserError
    start = time.time()
    try:
        train = compare.ensure_dataset(args.dataset, env, TOOL)
        nclass = records.read_meta(train).get('nclass') or 0
        if nclass < 10:
            raise UserError(f'--dataset={args.dataset}: it has {nclass} classes; the recipe uses '
                            'classes 0-9, so it needs at least 10.')
        names = Names(args, env['ML_DATA'], nclass)
        compare.ensure_splits(argparse.Namespace(dataset=args.dataset, seed_list=args.seed_list,
                                                 labels=names.size), env, balanced=True, tool=TOOL)
        filter_file(KEPT, os.path.join(env['ML_DATA'], f'{args.dataset}-test.tfrecord'),
                    os.path.join(env['ML_DATA'], f'{names.base}-test.tfrecord'),
                    f'Test images of {names.base}: classes {KEPT} -> 0..5')
        sizes = {}
        for seed in args.seed_list:
            sizes = prepare_seed(args, names, seed, env)
    except UserError as e:
        sys.exit(f'{TOOL}: error: {e}')
    results = {m: {lv: {} for lv in args.level_list} for m in args.method_list}
    mask, selection = choose_mask(args, names, env, results)
    for seed in args.seed_list:
        print(f'\n== Split {names.split(seed)}: {names.base}, seed {seed}', flush=True)
        sup = supervised(args, names, seed, env)
        for level in args.level_list:
            results['Supervised'][level][seed] = sup
            for method in ('MixMatch', 'FixMatch', 'RealMix', 'LabelSpreading'):
                if method in results and seed not in results[method][level]:
                    results[method][level][seed] = train_method(args, names, seed, level, env,
                                                                method, mask)
    seconds = {m: sum(r['seconds'] for lv in args.level_list for s, r in results[m][lv].items()
                      if not (m == 'Supervised' and lv != args.level_list[0]))
               for m in args.method_list}
    rows = summarize(args, results)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f'{args.dataset}_mismatch')
    title = (f'{args.dataset}: {args.labels_per_class} labels x 6 classes, {args.train_kimg} kimg, '
             f'seeds {",".join(map(str, args.seed_list))}, RealMix p={mask:g} ({args.tsa})')
    write_csv(stem + '.csv', rows)
    write_plot(stem + '.png', args, rows, title)
    underfit = sorted({f'{m} ({"all levels" if m == "Supervised" else f"{lv}%"}, seed {s})'
                       for m in args.method_list if m != 'LabelSpreading'
                       for lv in args.level_list
                       for s, r in results[m][lv].items() if r['train'] < compare.UNDERFIT})
    lines = verdict(args, rows)
    masked = mask_rows(args, results)
    write_mask_csv(stem + '_mask.csv', masked)
    write_json(stem + '.json', {'settings': {k: v for k, v in vars(args).items()},
                                'mask_selection': selection, 'chosen_mask': mask, 'rows': rows,
                                'mask_vs_ood': masked,
                                'verdict': lines, 'underfit': underfit,
                                'unlabeled_per_level': {str(k): v for k, v in sizes.items()},
                                'wall_seconds': time.time() - start})
    print_table(args, rows, mask, sizes, time.time() - start, seconds)
    print_mask(masked, mask)
    if underfit:
        print(f'Flagged: evaluated weights classify < {compare.UNDERFIT:g}% of their own labeled '
              f'images (too short or diverged, not a measure of the method): {"; ".join(underfit)}')
    for line in lines:
        print(line)
    print(f'Wrote {stem}.csv, {stem}_mask.csv, {stem}.png, {stem}.json')


if __name__ == '__main__':
    main()
