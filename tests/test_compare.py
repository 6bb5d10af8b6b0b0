"""benchmarks/compare.py and demo.py: the comparison table tells the truth, and the demo runs."""
import csv
import glob
import json
import os
import re
import shutil

import numpy as np
import pytest

from conftest import assert_ok, assert_user_error, make_images, run_script, write_records

from benchmarks import compare

TINY = '--filters=4 --repeat=1 --augment=svhn --batch=8'


def table_rows(out):
    """{method: its first seed's cell} of the table compare.py printed."""
    lines = out[out.index('== toy: 12 labels'):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('method'))
    rows = {}
    for line in lines[start + 2:]:
        if line.startswith('-'):
            return rows
        name, cell = re.split(r'\s{2,}', line.strip())[:2]
        rows[name.rstrip('*')] = cell


def test_quick_comparison_table_and_reuse(ml_data, tmp_path):
    x, y = make_images(60, (8, 8, 1), 3, seed=1)
    write_records(str(ml_data / 'toy-train.tfrecord'), x, y, 3, ['a', 'b', 'c'])
    x, y = make_images(15, (8, 8, 1), 3, seed=2)
    write_records(str(ml_data / 'toy-test.tfrecord'), x, y, 3, ['a', 'b', 'c'])
    # The trained methods that take one code path each (FixMatch's and MixUp's commands are
    # checked without training below; the demo trains MixUp); the scikit-learn references.
    cmd = ['benchmarks/compare.py', '--quick', '--dataset=toy', '--labels=12', '--valid=6',
           '--seeds=2,3', '--train_kimg=1', f'--train_dir={tmp_path}', f'--shared_args={TINY}',
           '--methods=realmix,mixmatch,supervised,sklearn']
    # --no_train before any run: nothing to show, said in one line.
    assert_user_error(run_script(*cmd, '--no_train'), 'RealMix has not evaluated yet')
    out = assert_ok(run_script(*cmd)).stdout
    table = out[out.index('== toy: 12 labels'):]
    for method in ('RealMix', 'MixMatch', 'Supervised', 'LabelSpreading knn', 'SVM'):
        assert method in table
    # RealMix's flags are MixMatch's here: its run is reused, not trained twice.
    assert 'MixMatch, seed 2: the RealMix run' in out
    assert 'seed 3' not in table  # --quick: the first seed only
    # A trained method whose evaluated weights fit < 90% of its own labels is starred and explained.
    for line in table.splitlines():
        if line.split() and line.split()[0].endswith('*'):
            assert f'* {line.split()[0][:-1]}: its evaluated weights classify only' in table
    # Learning curves of every trained run, with the time the trainer logged.
    curves = tmp_path / 'curves_toy_12_kimg1.csv'
    assert f'Learning curves: {curves}, {tmp_path / "curves_toy_12_kimg1.png"}' in out
    with open(curves, newline='') as f:
        rows = list(csv.DictReader(f))
    assert [(r['method'], r['seed'], r['kimg']) for r in rows] == [
        (m, '2', '1') for m in ('RealMix', 'MixMatch', 'Supervised')]
    assert all(float(r['hours']) > 0 and float(r['cpu_hours']) > 0 and r['test'] for r in rows)
    assert 'no time logged' not in table
    # Run again: every trained run is found finished, nothing trains; the curves are written
    # again from the reused runs.
    os.remove(curves)
    again = assert_ok(run_script(*cmd)).stdout
    assert again.count('finished earlier') == 2 and 'Training ' not in again
    with open(curves, newline='') as f:
        assert list(csv.DictReader(f)) == rows
    # --no_train reads the same runs (the trained methods' accuracies as above) ...
    trained = ('RealMix', 'MixMatch', 'Supervised')
    shown = assert_ok(run_script(*cmd, '--no_train')).stdout
    assert 'Training ' not in shown and 'UNFINISHED' not in shown
    assert {m: table_rows(shown)[m] for m in trained} == {m: table_rows(out)[m] for m in trained}
    # ... and shows runs that have not reached --train_kimg at their last evaluation, marked.
    shutil.copytree(tmp_path / 'toy.2@12_kimg1', tmp_path / 'toy.2@12_kimg2')
    longer = [a.replace('--train_kimg=1', '--train_kimg=2') for a in cmd]
    partial = assert_ok(run_script(*longer, '--no_train')).stdout
    assert 'UNFINISHED runs' in partial and 'RealMix seed 2: 1 of 2 kimg' in partial
    assert table_rows(partial)['RealMix'] == table_rows(out)['RealMix']


def results_for(realmix, supervised, mixup, svm):
    return {'RealMix': realmix, 'Supervised': supervised, 'MixUp': mixup,
            'SVM rbf C=10 (labeled only)': svm}


def test_goals_are_judged_only_on_full_runs(capsys):
    args = compare.parse_args(['--seeds=1,2,3'])
    compare.print_goals(args, results_for([97.2, 97.0, 98.0], [88, 87, 89], [89, 88, 90],
                                          [86, 88, 85]), {})
    out = capsys.readouterr().out
    assert out.count('NOT MET') == 0 and out.count(': MET') == 4
    # RealMix below a reference on one seed, supervised under 87%, MixUp below supervised.
    compare.print_goals(args, results_for([97.2, 96.0, 98.0], [86, 86, 89], [85, 85, 85],
                                          [86, 97, 85]), {'Supervised': [(1, 80.0)]})
    out = capsys.readouterr().out
    assert 'RealMix median >= 97%: MET (97.20%)' in out
    assert 'above every reference on every seed: NOT MET (not above SVM' in out
    assert 'supervised median >= 87%: NOT MET (86.00%)' in out
    assert 'MixUp >= supervised (medians): NOT MET' in out
    assert 'not trustworthy: Supervised' in out
    # FixMatch: its median, and above RealMix seed by seed; it is not one of RealMix's references.
    results = results_for([97.2, 97.0, 98.0], [88, 87, 89], [89, 88, 90], [86, 88, 85])
    compare.print_goals(args, dict(results, FixMatch=[98.6, 99.0, 97.9]), {})
    out = capsys.readouterr().out
    assert 'RealMix above every reference on every seed: MET' in out
    assert 'FixMatch median >= 98.5%: MET (98.60%)' in out
    assert 'FixMatch above RealMix on every seed: NOT MET (not on seed 3: 97.90 vs 98.00)' in out
    # --quick, or fewer than 3 seeds: the goals are not judged at all.
    for argv in (['--quick'], ['--seeds=1,2']):
        compare.print_goals(compare.parse_args(argv), results_for([90.0], [10.0], [10.0], [99.0]), {})
        out = capsys.readouterr().out
        assert 'not judged' in out and 'MET' not in out.replace('not judged', '')


def test_demo_runs_end_to_end(tmp_path):
    """README's first command, shortened: every step runs and the demo ends with the table."""
    env = {'ML_DATA': str(tmp_path / 'data')}
    out = assert_ok(run_script('demo.py', '--quick', '--train_kimg=1',
                               f'--train_dir={tmp_path / "exp"}', env=env, timeout=900)).stdout
    for step in ('== 1.', '== 2.', '== 3.', '== 4.', '== 5.', '== 6.'):
        assert step in out
    assert 'RealMix, seed 1: finished earlier' in out  # step 6 reuses step 3's run
    assert 'not judged' in out and 'NOT MET' not in out
    assert np.load(tmp_path / 'exp' / 'digits.1@50-200_pred.npy').shape == (100, 10)


def test_fixmatch_gets_three_stages_on_digits_only_with_the_default_flags(tmp_path):
    cmd = compare.command('fixmatch', compare.parse_args(['--seeds=1']), 1, str(tmp_path))
    assert cmd[0] == 'fixmatch.py' and cmd[-1] == '--scales=3'   # after the shared --scales=2
    assert '--scales=2' in cmd
    for argv in (['--dataset=toy'], ['--shared_args=--augment=svhn']):
        assert compare.parse_args(argv).fixmatch_args == ''
    assert compare.parse_args(['--fixmatch_args=--uratio=3']).fixmatch_args == '--uratio=3'
    cmd = compare.command('realmix', compare.parse_args(['--seeds=1']), 1, str(tmp_path))
    assert '--scales=3' not in cmd and '--scales=2' in cmd



def test_classic_methods_get_their_own_flags_and_digits_settings(tmp_path):
    """Each runs its algorithms/ script on RealMix's dataset; shared flags owned by another method
    stay out; the digits settings (VAT's per-pixel eps, UDA's three stages) win over the shared
    ones, and only with compare's digits defaults. Not run unless named in --methods."""
    assert not compare.CLASSIC_ONLY.keys() & set(compare.parse_args(['--seeds=1']).methods)
    args = compare.parse_args(['--seeds=1', '--methods=realmix,vat,uda,pseudo_label'])
    vat = compare.command('vat', args, 1, str(tmp_path))
    assert vat[:2] == ['algorithms/vat.py', '--dataset=digits.1@50-200'] and '--vat_eps=0.87' in vat
    assert not any(a.startswith('--warmup_kimg') for a in vat)   # RealMix's own flag
    uda = compare.command('uda', args, 1, str(tmp_path))
    assert '--scales=3' in uda and '--scales=2' not in uda
    # The table's header says so, for the methods in it.
    assert compare.classic_extra(args, {'RealMix': [1.0], 'VAT': [1.0]}) == '; VAT also --vat_eps=0.87'
    args = compare.parse_args(['--seeds=1', '--methods=realmix,uda,pseudo_label',
                               '--shared_args=--augment=svhn --scales=1 --wu=2 --threshold=0.5 '
                               '--tsa=linear_schedule'])
    uda = compare.command('uda', args, 1, str(tmp_path))
    assert {'--scales=1', '--wu=2', '--tsa=linear_schedule'} <= set(uda)
    assert '--threshold=0.5' not in uda and '--scales=3' not in uda
    label = compare.command('pseudo_label', args, 1, str(tmp_path))
    assert {'--wu=2', '--threshold=0.5'} <= set(label) and '--tsa=linear_schedule' not in label
    assert '--wu=2' not in compare.command('realmix', args, 1, str(tmp_path))


def test_classic_methods_goal_is_above_supervised(capsys):
    args = compare.parse_args(['--seeds=1,2,3'])
    results = results_for([97.2, 97.0, 98.0], [88, 87, 89], [89, 88, 90], [86, 88, 85])
    compare.print_goals(args, dict(results, VAT=[90.0, 91.0, 85.0], UDA=[88.0, 87.0, 99.0]), {})
    out = capsys.readouterr().out
    assert ("each classic method's median above supervised (88.00%): NOT MET "
            "(VAT 90.00%, UDA 88.00%)") in out
    # They are semi-supervised methods, not references RealMix must beat.
    assert 'RealMix above every reference on every seed: MET' in out



# ----------------------------------------------------------------------------------------------
# Learning curves and collapse flags, on synthetic event files.

def write_events(run_dir, evaluations, seconds=None):
    """One session's event file in run_dir/tf: evaluations [(kimg, train_labeled, valid, test)]
    (valid None: not logged); each period logs `seconds` wall and 2x CPU seconds (None: none)."""
    import tensorflow as tf
    writer = tf.summary.create_file_writer(str(run_dir / 'tf'))
    with writer.as_default():
        for kimg, fit, valid, test in evaluations:
            step = kimg << 10
            tf.summary.scalar('accuracy_train_labeled', fit, step=step)
            tf.summary.scalar('accuracy_test', test, step=step)
            if valid is not None:
                tf.summary.scalar('accuracy_valid', valid, step=step)
            if seconds is not None:
                tf.summary.scalar('monitors/period_seconds', seconds, step=step)
                tf.summary.scalar('monitors/period_cpu_seconds', 2 * seconds, step=step)
    writer.close()


def test_curves_sum_the_logged_time_over_resumed_sessions(tmp_path):
    run = tmp_path / 'run'
    write_events(run, [(8, 50, 40, 41), (16, 80, 60, 61)], seconds=1800)
    # A second session (the run resumed after a gap): its periods add up, the gap does not; the
    # period it redid (16) counts once, with its newest numbers.
    write_events(run, [(16, 81, 62, 63), (24, 90, 70, 71)], seconds=900)
    curve = compare.read_curve(str(run))
    assert [r['kimg'] for r in curve] == [8, 16, 24]
    assert [r['hours'] for r in curve] == pytest.approx([0.5, 0.75, 1.0])
    assert [r['cpu_hours'] for r in curve] == pytest.approx([1.0, 1.5, 2.0])
    assert [(r['train_labeled'], r['valid'], r['test']) for r in curve] == [
        (50, 40, 41), (81, 62, 63), (90, 70, 71)]
    # A run older than the time log (and a baseline: no validation set): hours left empty.
    old = tmp_path / 'old'
    write_events(old, [(8, 50, None, 41), (16, 80, None, 61)])
    assert [(r['hours'], r['cpu_hours'], r['valid']) for r in compare.read_curve(str(old))] == [
        (None, None, None)] * 2


def curve(*points):
    """Rows of read_curve from (kimg, train_labeled, test)."""
    return [dict(kimg=k, hours=k / 100, cpu_hours=None, train_labeled=fit, valid=None, test=test)
            for k, fit, test in points]


def test_collapse_flags():
    realmix = curve((8, 80, 60), (16, 99, 70), (24, 85, 65))    # lost 14 points of its labels
    fixmatch = curve((8, 90, 75), (16, 99, 88), (24, 99, 70))   # test 18 points below its best
    supervised = curve((8, 95, 50), (24, 100, 68))              # steady
    curves = {('RealMix', 1): realmix, ('MixMatch', 1): realmix, ('FixMatch', 1): fixmatch,
              ('Supervised', 1): supervised, ('MixUp', 1): curve((24, 100, 10))}
    results = {'RealMix': [65], 'MixMatch': [65], 'FixMatch': [70], 'Supervised': [68],
               'MixUp': [10]}
    marks, notes = compare.collapse_flags(results, curves, [1])
    below, unfit, late = compare.BELOW, compare.UNFIT, compare.LATE
    # RealMix (and MixMatch, the same run) ended below supervised and stopped fitting its labels;
    # FixMatch collapsed late but stays above supervised; MixUp is no semi-supervised method.
    assert marks == {('RealMix', 1): below + unfit, ('MixMatch', 1): below + unfit,
                     ('FixMatch', 1): late}
    assert notes[below] == ['RealMix seed 1: 65.00% < 68.00%', 'MixMatch seed 1: 65.00% < 68.00%']
    assert notes[unfit][0] == 'RealMix seed 1: 99.0% at kimg 16 -> 85.0% at kimg 24'
    assert notes[late] == ['FixMatch seed 1: 88.0% at kimg 16 -> 70.0% at kimg 24']
    # A drop of exactly the threshold, or a best at the end, is not flagged; without a supervised
    # run there is nothing to be below.
    steady = curve((8, 99, 80), (16, 99 - compare.FIT_DROP, 80 - compare.COLLAPSE_DROP))
    assert compare.collapse_flags({'RealMix': [70]}, {('RealMix', 1): steady}, [1])[0] == {}


def test_table_marks_flagged_cells_and_explains_each_mark_once(capsys):
    args = compare.parse_args(['--dataset=toy', '--seeds=1,2', '--train_kimg=8'])
    results = {'RealMix': [65.0, 72.0], 'Supervised': [68.0, 70.0]}
    times = {'RealMix': 3600.0, 'Supervised': 60.0}
    underfit = {'Supervised': [(2, 80.0)]}
    compare.print_table(args, results, times, (12, 30, 15), underfit, 10.0)
    plain = capsys.readouterr().out
    flags = ({('RealMix', 1): compare.BELOW + compare.UNFIT, ('RealMix', 2): compare.LATE},
             {compare.BELOW: ['RealMix seed 1: 65.00% < 68.00%'],
              compare.UNFIT: ['RealMix seed 1: 99.0% at kimg 4 -> 85.0% at kimg 8'],
              compare.LATE: ['RealMix seed 2: 88.0% at kimg 4 -> 72.0% at kimg 8']})
    compare.print_table(args, results, times, (12, 30, 15), underfit, 10.0, flags, ['Supervised'])
    out = capsys.readouterr().out
    lines = out.splitlines()
    row = next(line for line in lines if line.startswith('RealMix '))
    assert f'65.00{compare.BELOW}{compare.UNFIT}' in row and f'72.00{compare.LATE}' in row
    # The same columns: a header and rows of the same width, the time still last.
    head = next(line for line in lines if line.startswith('method'))
    assert len(row) == len(head) and row.endswith('60m00s')
    assert [h.split() for h in plain.splitlines() if h.startswith('method')] == [head.split()]
    for mark in (compare.BELOW, compare.UNFIT, compare.LATE):
        assert sum(line.startswith(mark + ' ') for line in lines) == 1
    assert 'kimg 4 -> 85.0% at kimg 8' in out and '* Supervised: its evaluated weights' in out
    assert "Supervised: their subprocesses' wall time" in out


def test_curves_csv_and_plot(tmp_path):
    args = compare.parse_args(['--dataset=toy', '--labels=12', '--seeds=1', '--train_kimg=24',
                               f'--train_dir={tmp_path}'])
    realmix = curve((8, 80, 60), (24, 90, 70))
    untimed = [dict(r, hours=None) for r in curve((24, 90, 50))]
    paths = compare.write_curves(args, {('RealMix', 1): realmix, ('MixMatch', 1): realmix,
                                        ('Supervised', 1): untimed})
    assert paths == (str(tmp_path / 'curves_toy_12_kimg24.csv'),
                     str(tmp_path / 'curves_toy_12_kimg24.png'))
    with open(paths[0], newline='') as f:
        reader = csv.reader(f)
        assert next(reader) == compare.CURVE_COLUMNS
        assert list(reader) == [['RealMix', '1', '8', '0.0800', '', '80.00', '', '60.00'],
                                ['RealMix', '1', '24', '0.2400', '', '90.00', '', '70.00'],
                                ['MixMatch', '1', '8', '0.0800', '', '80.00', '', '60.00'],
                                ['MixMatch', '1', '24', '0.2400', '', '90.00', '', '70.00'],
                                ['Supervised', '1', '24', '', '', '90.00', '', '50.00']]
    with open(paths[1], 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert sorted(os.listdir(tmp_path)) == ['curves_toy_12_kimg24.csv', 'curves_toy_12_kimg24.png']


# ----------------------------------------------------------------------------------------------
# --preset, and budgets too short to run.

PRESET = compare.PRESETS['cifar10']
KEYS = [key for key, *_ in compare.TRAINED]


def written_out(**changes):
    """compare.py's flags of the cifar10 preset written out by hand, with `changes`."""
    flags = dict(PRESET, **changes)
    return ['--dataset=cifarjpg'] + [f'--{k}={v}' for k, v in flags.items()]


@pytest.mark.parametrize('given, by_hand', [
    ([], written_out()),
    (['--train_kimg=32'], written_out(train_kimg=32)),
    (['--labels=40', '--valid=500', '--seeds=2'], written_out(labels=40, valid=500) + ['--seeds=2']),
    # A trainer flag replaces the preset's flag of that name, where it stands; a new one is added.
    (['--shared_args=--report_kimg=32 --wd=0.04'], written_out(shared_args=PRESET[
        'shared_args'].replace('--report_kimg=16', '--report_kimg=32') + ' --wd=0.04')),
    (['--realmix_args=--tsa=exp_schedule'], written_out(realmix_args='--tsa=exp_schedule')),
])
def test_preset_gives_the_commands_of_its_flags_written_out(given, by_hand, tmp_path):
    preset = compare.parse_args(['--preset=cifar10', '--dataset=cifarjpg', *given])
    hand = compare.parse_args(by_hand)
    for key in KEYS:
        for seed in (1, 2):
            assert (compare.command(key, preset, seed, str(tmp_path))
                    == compare.command(key, hand, seed, str(tmp_path)))


def test_preset_flags_reach_the_right_trainers(tmp_path):
    args = compare.parse_args(['--preset=cifar10', '--dataset=cifarjpg'])
    assert (args.labels, args.valid, args.train_kimg) == (250, 1000, 256)
    commands = {key: compare.command(key, args, 1, str(tmp_path)) for key in KEYS}
    for key, cmd in commands.items():
        names = [compare.flag_name(a) for a in cmd[1:]]
        assert len(names) == len(set(names)), cmd                 # each flag once
        values = compare.flag_values(cmd)
        assert (values['report_kimg'], values['save_kimg']) == ('16', '8')
        assert 'precision' not in values and values['filters'] == '32'
        # The paper's ramp (realmix.py's default); FixMatch keeps its own (paper's) defaults.
        assert 'warmup_kimg' not in values
        assert not {'lr', 'wd', 'optimizer', 'uratio'} & set(values)
    assert compare.flag_values(commands['realmix'])['tsa'] == 'linear_schedule'
    mixmatch = compare.flag_values(commands['mixmatch'])
    assert (mixmatch['tsa'], mixmatch['percent_mask']) == ('none', '-1')
    assert commands['fixmatch'][0] == 'fixmatch.py' and 'tsa' not in commands['fixmatch'][-1]
    # Without a preset, the digits commands are as before (their runs are reused).
    assert compare.command('realmix', compare.parse_args(['--seeds=1']), 1, '/r') == [
        'realmix.py', '--dataset=digits.1@50-200', '--train_dir=/r', '--train_kimg=128',
        '--report_kimg=16', '--save_kimg=16', '--keep_ckpt=2', '--seed=1', '--augment=svhn',
        '--batch=32', '--scales=2', '--warmup_kimg=64']


@pytest.mark.parametrize('argv, words', [
    (['--preset=cifar10', '--train_kimg=4'],
     ['--train_kimg=4', '--report_kimg=16, from --preset=cifar10', '--train_kimg=16 or more']),
    (['--train_kimg=4', '--shared_args=--report_kimg=8'], ['--report_kimg=8, from --shared_args']),
    (['--train_kimg=4', '--realmix_args=--report_kimg=8'], ['from --realmix_args']),
    (['--train_kimg=1', '--shared_args=--batch=2048'],
     ['--train_kimg=1 (1024 images)', '--batch=2048', '--train_kimg=2 or more']),
    (['--preset=cifar10', '--train_kimg=20000'], ['--epochs=1024', 'before --train_kimg=20000',
                                                  '--epochs=1250 or more']),
    (['--preset=nope'], ['--preset', "'nope'", 'cifar10']),
])
def test_bad_budgets_and_presets_are_argparse_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as stop:
        compare.parse_args(['--dataset=cifarjpg', *argv])
    assert stop.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]   # one line, after the usage
    assert ': error: ' in error
    for word in words:
        assert word in error


def test_short_budget_stops_before_anything_is_written(tmp_path):
    assert_user_error(run_script('benchmarks/compare.py', '--preset=cifar10', '--dataset=cifarjpg',
                                 '--train_kimg=2', f'--train_dir={tmp_path / "runs"}'),
                      '--train_kimg=2', '--report_kimg=16')
    assert not (tmp_path / 'runs').exists()


def test_cifar10_preset_on_a_folder_of_jpegs(ml_data, tmp_path):
    """The issue's path end to end on a folder the test writes: JPEGs by class -> create_datasets
    custom -> compare.py --preset=cifar10 (shrunk by flags), table and learning curves."""
    from PIL import Image
    classes = ['airplane', 'bird', 'cat']
    x, y = make_images(60, (32, 32, 3), len(classes), seed=3)
    for part, rows in (('train', range(45)), ('test', range(45, 60))):
        for i in rows:
            folder = tmp_path / 'photos' / part / classes[y[i]]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(folder / f'{i:04d}.jpg', quality=90)
    photos = tmp_path / 'photos'
    assert_ok(run_script('scripts/create_datasets.py', 'custom', '--name=photos',
                         f'--traindir={photos / "train"}', f'--testdir={photos / "test"}'))
    runs = tmp_path / 'runs'
    out = assert_ok(run_script(
        'benchmarks/compare.py', '--preset=cifar10', '--dataset=photos', '--labels=9', '--valid=6',
        '--seeds=1', '--train_kimg=1', '--methods=realmix,supervised', f'--train_dir={runs}',
        '--shared_args=--filters=4 --repeat=1 --batch=16 --report_kimg=1 --save_kimg=1')).stdout
    table = out[out.index('== photos: 9 labels'):]
    assert '(--preset=cifar10)' in table and '--tsa=linear_schedule' in table
    assert '9 labeled + 30 unlabeled training images' in table and 'on 15 photos-test' in table
    for method in ('RealMix', 'Supervised'):
        assert re.search(rf'^{method}\*? +\d+\.\d\d', table, re.M), table
    # The preset's network and augmentation reached the trainers, with the shrinking flags.
    args = json.load(open(glob.glob(str(runs / '*' / '*' / 'RealMix_*' / 'args' / 'args.json'))[0]))
    assert (args['augment'], args['filters'], args['batch'], args['tsa']) == (
        'cifar10', 4, 16, 'linear_schedule')
    with open(runs / 'curves_photos_9_kimg1.csv', newline='') as f:
        assert sorted(r['method'] for r in csv.DictReader(f)) == ['RealMix', 'Supervised']
