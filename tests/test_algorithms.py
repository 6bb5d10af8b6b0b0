"""The classic methods of algorithms/ through the trainer: a run on digits trains, writes its
TensorBoard tags and resumes exactly; each entry point checks its flags before reading data.
(Their losses against numpy: tests/test_algorithm_losses.py.)"""
import functools
import glob
import importlib
import os

import numpy as np
import pytest

from conftest import assert_ok, assert_user_error, run_script

import libml  # noqa: F401
import tensorflow as tf

from libml import algorithm as contract
from libml import datasets, events, splits, train
from libml.sources.digits import create_digits


# script -> (class name, the tags its loss writes besides losses/xe and losses/overall)
METHODS = {
    'pi_model': ('PiModel', {'losses/pm'}),
    'pseudo_label': ('PseudoLabel', {'losses/pl', 'monitors/mask', 'monitors/label_acc'}),
    'mean_teacher': ('MeanTeacher', {'losses/mt'}),
    'vat': ('VAT', {'losses/vat', 'losses/entmin'}),
    'uda': ('UDA', {'losses/kl', 'losses/entropy', 'monitors/mask', 'monitors/tsa_kept',
                    'monitors/label_acc'}),
}
# 2 kimg of 16-image batches on digits' 8x8 images, a tiny network; an evaluation every kimg.
TINY = dict(batch=16, filters=4, repeat=1, report_kimg=1, save_kimg=1, augment='svhn',
            eval_batch=256, deterministic=True)


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    """$ML_DATA with digits and its split digits.1@50 (made in-process: no subprocess start)."""
    root = tmp_path_factory.mktemp('ml_data')
    create_digits(str(root))
    os.makedirs(root / 'SSL')
    splits.create_split(str(root / 'SSL' / 'digits'), [str(root / 'digits-train.tfrecord')],
                        seed=1, size=50, quiet=True)
    old = os.environ.get('ML_DATA')
    os.environ['ML_DATA'] = str(root)
    yield root
    if old is None:
        del os.environ['ML_DATA']
    else:
        os.environ['ML_DATA'] = old


def trainer(script, train_dir, train_kimg, **changes):
    module = importlib.import_module(script)   # algorithms/ is on sys.path (conftest)
    dataset = datasets.resolve('digits.1@50-100')
    config = train.Config(train_dir=str(train_dir), train_kimg=train_kimg, **TINY)
    algorithm = getattr(module, METHODS[script][0])(dataset.nclass, **changes)
    return train.Trainer(algorithm, dataset, config)


def tags_of(run_dir):
    found = set()
    for path in events.event_files(run_dir):
        for event in tf.compat.v1.train.summary_iterator(path):
            found.update(v.tag for v in event.summary.value)
    return found


class Stopped(Exception):
    pass


def save_then_stop(save, nimg):
    save(nimg)
    raise Stopped


@pytest.mark.parametrize('script', sorted(METHODS))
def test_run_trains_writes_its_tags_and_resumes_exactly(script, digits, tmp_path):
    """2 kimg straight, and 1 kimg + a resumed second kimg by a new trainer: equal weights."""
    changes = dict(uratio=2) if script == 'uda' else {}   # a smaller UDA step
    straight = trainer(script, tmp_path / 'a', 2, **changes)
    assert contract.check(straight.algorithm) is straight.algorithm
    assert os.path.basename(straight.run_dir).startswith(METHODS[script][0] + '_')
    results = straight.train()
    assert results['accuracy_test'] > 100 / 10 + 5, results   # trained: above chance on 10 classes
    tags = tags_of(straight.run_dir)
    missing = (METHODS[script][1] | {'losses/xe', 'losses/overall', 'accuracy_test'}) - tags
    assert not missing, sorted(tags)
    # Stopped after its first checkpoint (not a 1-kimg run: the ramps follow the run's length).
    first = trainer(script, tmp_path / 'b', 2, **changes)
    first.save_checkpoint = functools.partial(save_then_stop, first.save_checkpoint)
    with pytest.raises(Stopped):
        first.train()
    resumed = trainer(script, tmp_path / 'b', 2, **changes)
    resumed.train()
    assert int(resumed.optimizer.updates.numpy()) == int(straight.optimizer.updates.numpy()) == 128
    for a, b in zip(straight.model.variables + straight.ema_model.variables,
                    resumed.model.variables + resumed.ema_model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)


# script -> a bad flag and the words of its one-line error
BAD_FLAGS = {
    'pi_model': ('--wu=-1', '--wu=-1.0 must be >= 0'),
    'pseudo_label': ('--threshold=1.5', '--threshold=1.5 must be in [0, 1]'),
    'mean_teacher': ('--warmup_pos=2', '--warmup_pos=2.0 must be in [0, 1]'),
    'vat': ('--vat_eps=0', '--vat_eps=0.0 must be > 0'),
    'uda': ('--T=-0.5', '--T=-0.5 must be > 0'),
}


@pytest.mark.parametrize('script', sorted(BAD_FLAGS))
def test_entry_point_rejects_a_bad_flag_before_reading_data(script, ml_data, tmp_path):
    """The dataset does not exist: the flag's error comes first, so no data was read."""
    flag, words = BAD_FLAGS[script]
    result = run_script(f'algorithms/{script}.py', '--dataset=missing.1@5-1', flag,
                        f'--train_dir={tmp_path / "exp"}')
    assert_user_error(result, words)
    assert not os.path.exists(tmp_path / 'exp')


def test_uda_entry_point_trains_with_its_papers_optimizer(digits, tmp_path):
    """The script's defaults of the trainer's flags (SGD, cosine) name the run folder."""
    assert_ok(run_script('algorithms/uda.py', '--dataset=digits.1@50-100', '--uratio=1',
                         f'--train_dir={tmp_path}', '--train_kimg=1', '--batch=16', '--filters=4',
                         '--repeat=1', '--report_kimg=1', '--augment=svhn',
                         env={'ML_DATA': str(digits)}))
    run, = glob.glob(str(tmp_path / 'digits.1@50-100' / 'UDA_*'))
    assert 'lr_schedulecosine' in run and 'optimizersgd' in run and 'uratio1' in run, run


class NoViews:
    """A method that asks for views the pipeline cannot make."""
    name, nu, args, views = 'NoViews', 2, {}, ('weak', 'blurred')

    def loss(self, batch, step):
        return 0.0, {}


def test_trainer_refuses_an_algorithm_that_breaks_the_contract(digits, tmp_path):
    """One line naming the class and what is wrong, before a model is built or a file written."""
    dataset = datasets.resolve('digits.1@50-100')
    config = train.Config(train_dir=str(tmp_path / 'exp'), **TINY)
    with pytest.raises(TypeError, match=r"^NoViews does not keep the algorithm contract "
                                        r"\(libml/algorithm.py\): views=\('weak', 'blurred'\)"):
        train.Trainer(NoViews(), dataset, config)
    assert not os.path.exists(tmp_path / 'exp')
