"""benchmarks/compare.py and demo.py: the comparison table tells the truth, and the demo runs."""

import numpy as np

from conftest import assert_ok, make_images, run_script, write_records

from benchmarks import compare

TINY = '--filters=4 --repeat=1 --augment=svhn --batch=8'


def test_quick_comparison_table_and_reuse(ml_data, tmp_path):
    x, y = make_images(60, (8, 8, 1), 3, seed=1)
    write_records(str(ml_data / 'toy-train.tfrecord'), x, y, 3, ['a', 'b', 'c'])
    x, y = make_images(15, (8, 8, 1), 3, seed=2)
    write_records(str(ml_data / 'toy-test.tfrecord'), x, y, 3, ['a', 'b', 'c'])
    cmd = ['benchmarks/compare.py', '--quick', '--dataset=toy', '--labels=12', '--valid=6',
           '--seeds=2,3', '--train_kimg=1', f'--train_dir={tmp_path}', f'--shared_args={TINY}']
    out = assert_ok(run_script(*cmd)).stdout
    table = out[out.index('== toy: 12 labels'):]
    for method in ('RealMix', 'MixMatch', 'FixMatch', 'Supervised', 'MixUp', 'LabelSpreading knn',
                   'SVM'):
        assert method in table
    # RealMix's flags are MixMatch's here: its run is reused, not trained twice.
    assert 'MixMatch, seed 2: the RealMix run' in out
    assert 'seed 3' not in table  # --quick: the first seed only
    # A trained method whose evaluated weights fit < 90% of its own labels is starred and explained.
    for line in table.splitlines():
        if line.split() and line.split()[0].endswith('*'):
            assert f'* {line.split()[0][:-1]}: its evaluated weights classify only' in table
    # Run again: every trained run is found finished, nothing trains.
    again = assert_ok(run_script(*cmd)).stdout
    assert again.count('finished earlier') == 4 and 'Training ' not in again


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
