"""benchmarks/mismatch.py: the class-mismatch experiment of README 2.3 runs end to end, writes its
table, plot and data as described, reuses finished runs, and reports bad flags in one line."""
import csv
import json
import os
import sys

import numpy as np
import pytest

from conftest import REPO, assert_ok, assert_user_error, make_images, run_script, write_records
from libml import records

sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import mismatch  # noqa: E402

TINY = '--filters=4 --repeat=1 --augment=svhn --batch=8'
NAMES = [f'c{i}' for i in range(10)]


def write_toy(ml_data, nclass=10, name='toy'):
    """{name}-train (20 images per class) and {name}-test (6 per class): 8x8 grey, visible class."""
    x, y = make_images(20 * nclass, (8, 8, 1), nclass, seed=1)
    write_records(str(ml_data / f'{name}-train.tfrecord'), x, y, nclass, NAMES[:nclass])
    x, y = make_images(6 * nclass, (8, 8, 1), nclass, seed=2)
    write_records(str(ml_data / f'{name}-test.tfrecord'), x, y, nclass, NAMES[:nclass])


def test_quick_run_writes_table_plot_and_data_and_resumes(ml_data, tmp_path):
    write_toy(ml_data)
    # Supervised and RealMix only (MixMatch and FixMatch commands: the next test); RealMix trains
    # both mask candidates at both levels.
    cmd = ['benchmarks/mismatch.py', '--quick', '--dataset=toy', '--labels_per_class=2',
           '--valid_per_class=2', '--seeds=2,3', '--train_kimg=1', f'--train_dir={tmp_path}',
           f'--shared_args={TINY}', '--methods=realmix,supervised']
    out = assert_ok(run_script(*cmd, timeout=1500)).stdout
    assert 'seed 3' not in out                              # --quick: the first seed only
    assert 'p=0.25' in out and 'p=0.5' in out and '<- chosen' in out
    assert 'RealMix >= Supervised at every mismatch level' in out

    # The data: six classes renumbered, equal-size levels, exactly L % out of distribution.
    for level, counts in ((0, {'0': 2, '1': 2, '2': 18, '3': 18, '4': 18, '5': 18}),
                          (100, {'-1': 64, '0': 2, '1': 2, '2': 2, '3': 2, '4': 2, '5': 2})):
        meta = records.read_meta(str(ml_data / 'SSL' / f'toy6_mismatch{level}.2@20-unlabel.tfrecord'))
        assert meta['label_counts'] == counts and meta['nclass'] == 6
        assert meta['class_names'] == NAMES[2:8] and meta['mismatch']['per_class'] == 16
    assert records.read_meta(str(ml_data / 'toy6-test.tfrecord'))['label_counts'] == {
        str(c): 6 for c in range(6)}

    # The CSV: one row per method and level, the supervised difference of itself is 0.
    with open(tmp_path / 'toy_mismatch.csv', newline='') as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == mismatch.CSV_COLUMNS
    assert [(r['method'], r['mismatch_pct']) for r in rows] == [
        (m, lv) for m in ('Supervised', 'RealMix') for lv in ('0', '100')]
    for r in rows:
        assert r['seeds'] == '1' and 0 <= float(r['mean']) <= 100
        assert float(r['minus_supervised_mean']) == pytest.approx(
            float(r['mean']) - float(next(s['mean'] for s in rows if s['method'] == 'Supervised'
                                          and s['mismatch_pct'] == r['mismatch_pct'])), abs=0.02)
    with open(tmp_path / 'toy_mismatch.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with open(tmp_path / 'toy_mismatch.json') as f:
        summary = json.load(f)
    assert summary['chosen_mask'] in (0.25, 0.5) and set(summary['mask_selection']) == {'0.25', '0.5'}
    # RealMix's mask against the out-of-distribution images, from the trainer's ood/* monitors:
    # none at 0 %; at 100 % every unlabeled training image is out of distribution, so every
    # dropped one is (precision 1) and the recall is the dropped share.
    with open(tmp_path / 'toy_mismatch_mask.csv', newline='') as f:
        masked = {r['mismatch_pct']: r for r in csv.DictReader(f)}
    assert masked['0']['recall'] == masked['0']['ood_share'] == ''
    full = {k: float(v) for k, v in masked['100'].items()}
    assert full['ood_share'] == 1 and full['precision'] == 1
    assert full['recall'] == pytest.approx(full['dropped']) and 0 < full['dropped'] < 1
    assert summary['mask_vs_ood'][1]['recall'] == pytest.approx(full['recall'], abs=1e-4)
    assert 'against the out-of-distribution images' in out

    # Run again: every trained run (supervised, 2 x 2 RealMix) is reused.
    again = assert_ok(run_script(*cmd, timeout=900)).stdout
    assert again.count('finished earlier') == 5 and 'Training ' not in again
    assert 'Unlabeled images of mismatch' not in again    # the data files are reused too


def test_each_method_trains_with_its_own_command(monkeypatch, tmp_path):
    """The commands of the methods the quick run leaves out (the default --methods runs all)."""
    args = mismatch.parse_args(['--dataset=toy', f'--train_dir={tmp_path}', '--seeds=1'])
    assert args.method_list == mismatch.METHODS
    names = mismatch.Names(args, str(tmp_path), 10)
    seen = {}
    monkeypatch.setattr(mismatch, 'trained', lambda args, names, seed, env, key, title, cmd,
                        prefix: seen.setdefault(key, (cmd, prefix)))
    mismatch.semi_supervised(args, names, 1, 50, {})
    mismatch.semi_supervised(args, names, 1, 50, {}, mask=0.25)
    mismatch.fixmatch(args, names, 1, 50, {})
    mismatch.supervised(args, names, 1, {})
    dataset = '--dataset=toy6_mismatch50.1@100-60'
    assert seen['mixmatch_50'][0][:2] == ['realmix.py', dataset]
    assert seen['mixmatch_50'][0][-2:] == ['--tsa=none', '--percent_mask=-1']
    assert seen['realmix_p0.25_50'][0][-2:] == ['--tsa=linear_schedule', '--percent_mask=0.25']
    assert seen['fixmatch_50'][0][:2] == ['fixmatch.py', dataset]
    assert seen['fixmatch_50'][1] == 'FixMatch' and '--percent_mask=-1' not in seen['fixmatch_50'][0]
    assert seen['supervised'][0][:3] == ['fully_supervised/fs_baseline.py', '--dataset=toy6-0',
                                         '--train_record=SSL/toy6.1@100-label.tfrecord']


@pytest.mark.parametrize('flag, words', [
    ('--levels=0,30', ['--levels=0,30', 'choose among']),
    ('--mask_candidates=0.5,1.5', ['--mask_candidates', 'fractions in (0, 1)']),
    ('--seeds=1,x', ['--seeds', 'integers']),
    ('--methods=realmix,mixmatch', ['--methods=realmix,mixmatch', 'with supervised and realmix']),
    ('--methods=realmix,supervised,uda', ['--methods', 'choose among']),
    ('--dataset=toy.1', ['--dataset', 'NAME only']),
    ('--shared_args=--percent_mask=0.5', ['--tsa and --percent_mask are set per method']),
])
def test_bad_flags_are_one_line_errors(flag, words):
    assert_user_error(run_script('benchmarks/mismatch.py', flag), *words)


def test_dataset_with_fewer_than_ten_classes(ml_data, tmp_path):
    write_toy(ml_data, nclass=3, name='small')
    assert_user_error(run_script('benchmarks/mismatch.py', '--dataset=small',
                                 f'--train_dir={tmp_path}'), '--dataset=small', 'at least 10')


def test_validation_positions_and_draw_size():
    labels = np.tile(np.arange(10), 5)              # class-interleaved, 5 images per class
    valid = mismatch.validation_positions(labels, 2, 'f')
    assert sorted(labels[valid].tolist()) == sorted(mismatch.KEPT * 2)
    assert valid.tolist() == sorted(valid.tolist()) and max(valid) < 20   # the first ones
    # Classes 4..7 keep 3 images each after validation, 0, 1, 8, 9 keep 5: levels draw 3 each.
    assert mismatch.draw_size(labels, valid) == 3
    with pytest.raises(Exception, match='--valid_per_class=6'):
        mismatch.validation_positions(labels, 6, 'f')
