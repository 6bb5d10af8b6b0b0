"""scripts/extract_accuracy.py and libml/events.py: medians of the last accuracy_test evaluations
of a run."""
import json
import os
import time

import numpy as np
import pytest

from conftest import REPO, assert_ok, assert_user_error, run_script
from libml import events as extract

SCRIPT = os.path.join(REPO, 'scripts', 'extract_accuracy.py')


def write_events(folder, scalars, suffix):
    """One event file in `folder` with {tag: [(step, value), ...]}, as the trainer writes them."""
    import tensorflow as tf
    writer = tf.summary.create_file_writer(str(folder), filename_suffix=suffix)
    with writer.as_default():
        steps = sorted({s for pairs in scalars.values() for s, _ in pairs})
        for step in steps:
            for tag, pairs in scalars.items():
                for s, v in pairs:
                    if s == step:
                        tf.summary.scalar(tag, v, step=step)
    writer.close()
    time.sleep(0.01)  # the next file's events are strictly newer


@pytest.fixture
def resumed_run(tmp_path):
    """A run evaluated 60 times, killed after step 30 and resumed from step 24: steps 25..30 were
    evaluated twice, the second time with other values (which must win)."""
    run = tmp_path / 'experiments' / 'toy.1@10-5' / 'RealMix_archresnet'
    (run / 'tf').mkdir(parents=True)
    rng = np.random.RandomState(0)
    first = {s: float(v) for s, v in zip(range(1, 31), rng.uniform(40, 60, 30))}
    second = {s: float(v) for s, v in zip(range(25, 61), rng.uniform(70, 90, 36))}
    write_events(run / 'tf', {'accuracy_test': [(s * 1024, v) for s, v in first.items()],
                              'losses/xe': [(s * 1024, 1.0) for s in first]}, '.first')
    write_events(run / 'tf', {'accuracy_test': [(s * 1024, v) for s, v in second.items()],
                              'accuracy_valid': [(s * 1024, 0.5) for s in second]}, '.second')
    merged = {**first, **second}
    values = [merged[s] for s in sorted(merged)]
    assert len(values) == 60
    return run, values


def test_medians_of_resumed_run(resumed_run):
    run, values = resumed_run
    result = assert_ok(run_script(SCRIPT, str(run) + '/'))  # trailing slash, as in the README
    expected = {'last01': values[-1], 'last10': float(np.median(values[-10:])),
                'last20': float(np.median(values[-20:])), 'last50': float(np.median(values[-50:]))}
    with open(run / 'stats' / 'accuracy.json') as f:
        written = json.load(f)
    assert sorted(written) == ['last01', 'last10', 'last20', 'last50']
    for k, v in expected.items():
        assert written[k] == pytest.approx(v, abs=1e-4), k
    assert json.loads(result.stdout[:result.stdout.rindex('}') + 1]) == written
    assert '60 evaluations' in result.stdout and 'accuracy.json' in result.stdout
    assert not [f for f in os.listdir(run / 'stats') if f != 'accuracy.json']  # no temporary left


def test_read_scalars_counts_each_step_once_newest_wins(resumed_run):
    run, values = resumed_run
    by_step, truncated, tags = extract.read_scalars(extract.event_files(str(run)), 'accuracy_test')
    assert truncated == 0 and {'accuracy_test', 'losses/xe', 'accuracy_valid'} <= tags
    assert sorted(by_step) == [s * 1024 for s in range(1, 61)]
    assert [by_step[s] for s in sorted(by_step)] == pytest.approx(values, abs=1e-4)
    assert 70 <= by_step[25 * 1024] <= 90  # the resumed run's value, not the first one


def test_fewer_evaluations_than_a_window():
    assert extract.medians([50.0]) == {'last01': 50.0, 'last10': 50.0, 'last20': 50.0, 'last50': 50.0}
    assert extract.medians([10.0, 30.0, 20.0, 40.0]) == {
        'last01': 40.0, 'last10': 25.0, 'last20': 25.0, 'last50': 25.0}


def test_truncated_event_file_keeps_complete_records(resumed_run):
    run, values = resumed_run
    files = extract.event_files(str(run))
    with open(files[-1], 'rb') as f:
        data = f.read()
    with open(files[-1], 'wb') as f:
        f.write(data[:-7])  # killed mid-write
    by_step, truncated, _ = extract.read_scalars(files, 'accuracy_test')
    assert truncated == 1
    assert len(by_step) in (59, 60) and by_step[1024] == pytest.approx(values[0], abs=1e-4)


def test_errors(tmp_path):
    assert_user_error(run_script(SCRIPT, tmp_path / 'nope'), 'does not exist')
    empty = tmp_path / 'run'
    (empty / 'tf').mkdir(parents=True)
    assert_user_error(run_script(SCRIPT, empty), 'no TensorBoard event files')
    assert_user_error(run_script(SCRIPT), 'expected one argument')
    write_events(empty / 'tf', {'losses/xe': [(1024, 1.0)]}, '.x')
    assert_user_error(run_script(SCRIPT, empty), 'no accuracy_test values', 'losses/xe')


def test_help():
    result = run_script(SCRIPT, '--help')  # absl exits 1 after --help
    assert 'RUN_FOLDER/stats/accuracy.json' in result.stdout and '--tag' in result.stdout
