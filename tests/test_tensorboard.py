"""What TensorBoard shows of our runs (libml/summaries.py): the collapse monitors, images and
HParams pieces against numpy, and a real `tensorboard` server read through its own HTTP data
routes on tiny runs (FixMatch with images, resumed without them; a supervised baseline; a run of
an older version without HParams)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

from conftest import free_port, make_ssl_dataset

import libml  # noqa: F401
import tensorflow as tf

import fixmatch
from libml import baselines, datasets, summaries, train
from libml.config import Config
from libml.utils import UserError

NAMES = ['ant', 'bee', 'cat']


# -- the pieces, against numpy ---------------------------------------------------------------------

def test_collapse_tensors_counts_guesses_and_masks():
    guess = np.array([[.7, .2, .1], [.1, .8, .1], [.6, .3, .1], [.2, .3, .5], [.9, .05, .05]])
    entries = {'losses/xe': 1.0, summaries.GUESS: guess, summaries.MASK: [1., 0., 1., 1., 0.],
               summaries.LABELED_MASK: [1., 0.]}
    out = summaries.collapse_tensors(entries, 3)
    assert entries == {'losses/xe': 1.0}          # the per-example entries are taken out
    np.testing.assert_array_equal(out[summaries.CLASS_COUNTS],
                                  np.bincount(guess.argmax(1), minlength=3))
    assert float(out['collapse/mask_rate']) == pytest.approx(0.6)
    assert float(out['collapse/tsa_kept']) == pytest.approx(0.5)
    assert summaries.collapse_tensors({'losses/xe': 1.0}, 3) == {}   # supervised: no monitors


def test_mask_precision_and_recall_of_out_of_distribution_images(tmp_path):
    # Two views of four unlabeled images (view-major, as RealMix masks them); images 1 and 3 are
    # out of distribution (label -1).
    u_label = np.array([2, -1, 0, -1])
    mask = np.array([1., 0., 1., 1.,   0., 0., 1., 1.])
    entries = {summaries.MASK: mask}
    out = summaries.collapse_tensors(entries, 3, tf.constant(u_label))
    ood = np.tile(u_label < 0, 2)
    dropped = mask == 0
    wanted = ((dropped & ood).mean(), dropped.mean(), ood.mean())
    for tag, want in zip(summaries.OOD_SHARES, wanted):
        assert float(out[tag]) == pytest.approx(want)
    # A period of two steps: the second has no out-of-distribution image and drops one example.
    second = summaries.ood_shares(tf.constant([1., 0., 1., 1., 1., 1., 1., 1.]),
                                  tf.constant([0, 1, 2, 0]))
    means = {tag: (float(out[tag]) + float(second[tag])) / 2 for tag in summaries.OOD_SHARES}
    means['losses/xe'] = 1.0
    with tf.summary.create_file_writer(str(tmp_path)).as_default(step=1):
        written = summaries.write_ood(means)
    assert means == {'losses/xe': 1.0}
    # Ratios of the period's sums: of the 4 dropped examples (3 + 1) 2 are out of distribution,
    # and 2 of the 4 out-of-distribution examples (of 16) are dropped.
    assert written == pytest.approx({'share': 4 / 16, 'precision': 2 / 4, 'recall': 2 / 4})
    # Without an out-of-distribution image in the period, nothing is written.
    none = {tag: float(second[tag]) for tag in summaries.OOD_SHARES}
    assert summaries.write_ood(none) is None and none == {}

def test_class_share_and_entropy():
    assert summaries.guess_entropy(summaries.class_share([5, 5, 5, 5])) == pytest.approx(1)
    assert summaries.guess_entropy(summaries.class_share([9, 0, 0])) == 0
    share = summaries.class_share([3, 1])
    np.testing.assert_allclose(share, [.75, .25])
    expect = -(.75 * np.log(.75) + .25 * np.log(.25)) / np.log(2)
    assert summaries.guess_entropy(share) == pytest.approx(expect)
    np.testing.assert_allclose(summaries.class_share([0, 0]), [.5, .5])  # nothing guessed yet
    assert summaries.default_collapse_share(10) == pytest.approx(0.55)
    assert summaries.default_collapse_share(2) == pytest.approx(0.75)


def test_collapse_watch_warns_after_a_streak_and_resets():
    watch = summaries.CollapseWatch(0.6, 2, NAMES)
    skewed, even = np.array([.1, .8, .1]), np.array([.3, .4, .3])
    assert watch.update(skewed) is None                    # one report: not yet
    message = watch.update(skewed)
    assert "class 'bee' took 80%" in message and 'last 2 reports' in message
    assert '\n' not in message
    assert watch.update(even) is None and watch.update(skewed) is None   # the streak restarts
    assert summaries.CollapseWatch(0.6, 1, None).update(skewed).startswith("warning: class '1'")


def test_tile_enlarges_small_images_with_gaps():
    images = np.stack([np.full((8, 8, 1), v, np.uint8) for v in (0, 100, 200)])
    grid = summaries.tile(images, columns=2, min_cell=20)   # x3: 24 pixels a side
    assert grid.shape == (1, 2 * 24 + 1, 2 * 24 + 1, 1) and grid.dtype == np.uint8
    assert (grid[0, :24, :24] == 0).all() and (grid[0, :24, 25:] == 100).all()
    assert (grid[0, 25:, :24] == 200).all()
    assert (grid[0, 24] == 255).all() and (grid[0, 25:, 25:] == 255).all()   # gaps, empty cell
    assert summaries.tile(np.zeros((2, 32, 32, 3), np.uint8), min_cell=20).shape == (1, 32, 65, 3)


def test_confident_errors_and_pictures():
    labels = np.array([0, 1, 2, 0, 1])
    probs = np.array([[.9, .05, .05], [.6, .3, .1], [.1, .1, .8], [.2, .7, .1], [.1, .1, .8]])
    assert summaries.confident_errors(labels, probs).tolist() == [4, 3, 1]  # .8, .7, .6
    assert summaries.confident_errors(labels, probs, count=1).tolist() == [4]
    pixels = np.zeros((5, 8, 8, 1), np.uint8)
    picture = summaries.confident_errors_pixels(pixels, labels, probs, NAMES)
    assert picture.dtype == np.uint8 and picture.shape[0] == 1 and picture.shape[3] == 3
    assert summaries.confident_errors_pixels(pixels, labels, np.eye(3)[labels], NAMES) is None
    matrix = summaries.confusion_pixels(labels, probs.argmax(1), NAMES)
    assert matrix.shape[0] == 1 and matrix.shape[3] == 3 and matrix.std() > 0


def test_hparam_values_keep_what_hparams_can_show():
    values = summaries.hparam_values({'lr': np.float32(0.5), 'batch': np.int64(4), 'name': 'a',
                                      'ema_warmup': True, 'class_names': ['a'], 'missing': None})
    assert values == {'lr': 0.5, 'batch': 4, 'name': 'a', 'ema_warmup': True}
    assert type(values['lr']) is float and type(values['batch']) is int


@pytest.mark.parametrize('changes, flag', [({'collapse_share': 1.5}, '--collapse_share=1.5'),
                                           ({'collapse_share': 0.0}, '--collapse_share=0.0'),
                                           ({'collapse_reports': 0}, '--collapse_reports=0')])
def test_bad_collapse_flags(changes, flag):
    with pytest.raises(UserError, match=flag):
        Config(**changes).check()


# -- tiny runs, read through a real TensorBoard server ---------------------------------------------

TINY = {'batch': 8, 'filters': 4, 'repeat': 1, 'report_kimg': 1, 'save_kimg': 1,
        'augment': 'svhn', 'eval_batch': 64}


@pytest.fixture(scope='module')
def logdir(tmp_path_factory):
    """Three runs in one logdir; yields (logdir, {what: (run folder relative to logdir, results,
    console output)})."""
    root = tmp_path_factory.mktemp('ml_data')
    name = make_ssl_dataset(str(root), n_label=12, n_unlabel=48, n_test=24, class_names=NAMES)
    old_ml_data = os.environ.get('ML_DATA')
    os.environ['ML_DATA'] = str(root)
    logs = tmp_path_factory.mktemp('experiments')
    dataset = datasets.resolve(f'{name}-3')
    runs = {}

    def fit(what, algorithm, kimg, capture, **config):
        trainer = train.Trainer(algorithm, dataset, Config(
            train_dir=str(logs), train_kimg=kimg, **dict(TINY, **config)))
        results = trainer.train()
        runs[what] = (os.path.relpath(trainer.run_dir, logs), results, capture())
        return trainer

    import io
    from contextlib import redirect_stdout
    try:
        for what, kimg, images in (('fixmatch', 2, True), ('fixmatch resumed', 3, False)):
            out = io.StringIO()
            with redirect_stdout(out):
                # Any class above 5% of the guesses for 2 reports in a row: the warning's path.
                fit(what, fixmatch.FixMatch(3, uratio=2), kimg, out.getvalue,
                    image_summaries=images, collapse_share=0.05, collapse_reports=2)
        fit('supervised', baselines.Supervised(3), 1, lambda: '')
        # A run as an older version wrote it: no hparams folder.
        old = logs / dataset.name / 'Old_run'
        shutil.copytree(logs / runs['supervised'][0] / 'tf', old / 'tf')
        runs['old'] = (os.path.relpath(old, logs), None, '')
        yield logs, runs
    finally:
        if old_ml_data is None:
            os.environ.pop('ML_DATA', None)
        else:
            os.environ['ML_DATA'] = old_ml_data


def test_console_warns_of_collapse_once_the_streak_is_long_enough(logdir):
    _, runs = logdir
    first = runs['fixmatch'][2]
    assert first.count('warning: class') == 1       # at the second report, not the first
    assert any(f"class '{n}'" in first for n in NAMES)
    assert runs['fixmatch resumed'][2].count('warning: class') == 0  # a new streak after resume


class Server:
    """`tensorboard --logdir` on a free loopback port, stopped on exit."""

    def __init__(self, logdir, log_path):
        self.port = free_port()
        self.log = open(log_path, 'w')
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'tensorboard.main', '--logdir', str(logdir), '--host',
             '127.0.0.1', '--port', str(self.port), '--reload_interval', '1'],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def get(self, route, body=None):
        url = f'http://127.0.0.1:{self.port}/data/{route}'
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data,
                                         headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(request, timeout=20) as response:
            payload = response.read()
        return payload if route.startswith('plugin/images/individualImage') else json.loads(payload)

    def wait_for(self, runs, timeout=180):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                listed = self.get('runs')
                if set(runs) <= set(listed):
                    return listed
            except OSError:
                pass   # not listening yet
            time.sleep(1)
        raise AssertionError(f'TensorBoard did not list {runs} in {timeout} s:\n'
                             + self.output()[-3000:])

    def output(self):
        with open(self.log.name, errors='replace') as f:
            return f.read()

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def test_tensorboard_shows_scalars_images_histograms_and_hparams(logdir, tmp_path):
    logs, runs = logdir
    fixmatch_run, results, _ = runs['fixmatch resumed']
    supervised_run, supervised_results, _ = runs['supervised']
    tf_runs = [f'{runs[w][0]}/tf' for w in ('fixmatch', 'supervised', 'old')]
    hp_runs = [f'{r}/hparams' for r in (fixmatch_run, supervised_run)]
    server = Server(logs, tmp_path / 'tensorboard.log')
    try:
        listed = server.wait_for(tf_runs + hp_runs)
        assert f"{runs['old'][0]}/hparams" not in listed

        scalars = server.get('plugin/scalars/tags')
        assert {'accuracy_test', 'collapse/largest_class_share', 'collapse/guess_entropy',
                'collapse/mask_rate'} <= set(scalars[f'{fixmatch_run}/tf'])
        assert not {t for t in scalars[f'{supervised_run}/tf'] if t.startswith('collapse/')}
        assert 'accuracy_test' in scalars[f"{runs['old'][0]}/tf"]   # the old run still shows
        for run in hp_runs:
            assert set(scalars[run]) == set(summaries.HPARAMS_METRICS)
        query = urllib.parse.urlencode({'run': f'{fixmatch_run}/hparams',
                                        'tag': 'hparams/accuracy_test'})
        points = server.get(f'plugin/scalars/scalars?{query}')
        assert [p[1] for p in points] == [1024, 2048, 3072]
        assert points[-1][2] == pytest.approx(results['accuracy_test'])

        images = server.get('plugin/images/tags')[f'{fixmatch_run}/tf']
        assert set(images) == {'inputs/labeled', 'inputs/unlabeled_1_weak',
                               'inputs/unlabeled_2_strong', 'eval/confusion_matrix',
                               'eval/confident_errors'} or set(images) == {
            'inputs/labeled', 'inputs/unlabeled_1_weak', 'inputs/unlabeled_2_strong',
            'eval/confusion_matrix'}   # eval/confident_errors: only when a test image is wrong
        for tag, steps in (('inputs/unlabeled_2_strong', [0]),
                           ('eval/confusion_matrix', [1024, 2048])):  # not after the resume
            query = urllib.parse.urlencode({'run': f'{fixmatch_run}/tf', 'tag': tag, 'sample': 0})
            entries = server.get(f'plugin/images/images?{query}')
            assert [e['step'] for e in entries] == steps, tag
            png = server.get(f"plugin/images/individualImage?{entries[-1]['query']}")
            assert png[:8] == b'\x89PNG\r\n\x1a\n'
        assert 'inputs/labeled' in server.get('plugin/images/tags')[f'{supervised_run}/tf']

        histograms = server.get('plugin/histograms/tags')[f'{fixmatch_run}/tf']
        assert 'collapse/guessed_classes' in histograms

        experiment = server.get('plugin/hparams/experiment', {'experimentName': ''})
        names = {h['name'] for h in experiment['hparamInfos']}
        assert {'algorithm', 'dataset', 'lr', 'batch', 'confidence', 'uratio', 'smoothing',
                'train_kimg'} <= names
        metrics = {m['name']['tag'] for m in experiment['metricInfos']}
        assert metrics == set(summaries.HPARAMS_METRICS)   # not the forty tags of RUN/tf
        groups = server.get('plugin/hparams/session_groups', {
            'experimentName': '', 'startIndex': 0, 'sliceSize': 10, 'colParams': [],
            'allowedStatuses': ['STATUS_UNKNOWN', 'STATUS_SUCCESS', 'STATUS_FAILURE',
                                'STATUS_RUNNING']})['sessionGroups']
        by_name = {g['name']: g for g in groups}
        trial = lambda run: '{1} ({0})'.format(*run.split('/'))   # RUN (DATASET)
        assert set(by_name) == {trial(fixmatch_run), trial(supervised_run)}   # not the old run
        fixmatch_run, supervised_run = trial(fixmatch_run), trial(supervised_run)
        fm = by_name[fixmatch_run]
        assert fm['hparams']['algorithm'] == 'FixMatch' and fm['hparams']['train_kimg'] == 2
        assert by_name[supervised_run]['hparams']['algorithm'] == 'FSBaseline'
        final = {m['name']['tag']: m['value'] for m in fm['metricValues']}
        assert final['hparams/accuracy_test'] == pytest.approx(results['accuracy_test'])
        assert final['hparams/accuracy_valid'] == pytest.approx(results['accuracy_valid'])
        final = {m['name']['tag']: m['value'] for m in by_name[supervised_run]['metricValues']}
        assert final['hparams/accuracy_test'] == pytest.approx(supervised_results['accuracy_test'])
    finally:
        server.stop()


def test_hparams_session_written_once(logdir):
    """The resumed run kept its one session (the hyper-parameters of its first start); a run
    without one (an older version's) gets one when it is resumed."""
    logs, runs = logdir
    run = logs / runs['fixmatch resumed'][0]
    sessions = 0
    for path in (run / summaries.HPARAMS_FOLDER).iterdir():   # one event file per start
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            event = tf.compat.v1.Event.FromString(record)
            sessions += sum(v.tag == '_hparams_/session_start_info' for v in event.summary.value)
    assert sessions == 1
    old = logs / runs['old'][0]
    assert not summaries.has_hparams(str(old))
    summaries.HParamsLog(str(old), {'lr': 0.1}, 'old').close()
    assert summaries.has_hparams(str(old))
