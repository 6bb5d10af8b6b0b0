"""Shared fixtures: a private $ML_DATA per test and a runner for the command-line scripts."""
import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# The entry points of algorithms/ import each other as scripts do (mean_teacher imports pi_model).
sys.path.insert(0, os.path.join(REPO, 'algorithms'))


@pytest.fixture
def ml_data(tmp_path, monkeypatch):
    """A fresh $ML_DATA folder for this test (also seen by scripts run with `run_script`)."""
    path = tmp_path / 'ml_data'
    path.mkdir()
    monkeypatch.setenv('ML_DATA', str(path))
    return path


def run_script(*args, cwd=REPO, env=None, timeout=600):
    """Runs `python SCRIPT ARGS...` from the repository root; returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))  # TensorFlow's log level: libml's default
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def free_port():
    """A TCP port of 127.0.0.1 that is free now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def assert_ok(result):
    assert result.returncode == 0, f'exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}'
    return result


def assert_user_error(result, *words):
    """A user mistake: non-zero exit, no traceback, a message naming each of `words`, and the
    error is the last line printed (nothing of TensorFlow's after it)."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and 'error' in lines[-1].lower(), result.stderr
    for word in words:
        assert word in result.stderr, f'{word!r} not in:\n{result.stderr}'
    return result


def make_images(n, shape, nclass, seed=0):
    """`n` uint8 images whose class (i % nclass) is visible: a bright band at a class-dependent row."""
    import numpy as np
    rng = np.random.default_rng(seed)
    h, w, c = shape
    images = rng.integers(0, 60, size=(n, h, w, c), dtype=np.uint8)
    labels = np.arange(n) % nclass
    for i, label in enumerate(labels):
        row = (label * h) // nclass
        images[i, row:row + max(1, h // nclass)] = 230
    return images, labels


def write_records(path, images, labels, nclass, class_names=None, sources=None):
    from libml import records
    with records.RecordWriter(path, images.shape[1:], nclass=nclass, class_names=class_names) as w:
        for i, png in enumerate(records.encode_png(images)):
            w.write(png, labels[i], None if sources is None else sources[i])
    return path


def make_ssl_dataset(root, name='toy', seed=1, shape=(8, 8, 1), nclass=3, n_label=12,
                     n_unlabel=30, n_test=15, class_names=None):
    """Writes {name}.{seed}@{n_label} split files and {name}-test under `root` (an $ML_DATA)."""
    import os
    os.makedirs(os.path.join(root, 'SSL'), exist_ok=True)
    stem = os.path.join(str(root), 'SSL', f'{name}.{seed}@{n_label}')
    x, y = make_images(n_label, shape, nclass, seed=1)
    write_records(stem + '-label.tfrecord', x, y, nclass, class_names)
    x, y = make_images(n_unlabel, shape, nclass, seed=2)
    write_records(stem + '-unlabel.tfrecord', x, y, nclass, class_names)
    x, y = make_images(n_test, shape, nclass, seed=3)
    write_records(os.path.join(str(root), f'{name}-test.tfrecord'), x, y, nclass, class_names)
    return f'{name}.{seed}@{n_label}'
