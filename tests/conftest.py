"""Shared fixtures: a private $ML_DATA per test and a runner for the command-line scripts."""
import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import typing

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# The entry points of algorithms/ import each other as scripts do (mean_teacher imports pi_model).
sys.path.insert(0, os.path.join(REPO, 'algorithms'))
import libml  # noqa: F401  (its TensorFlow environment defaults, as scripts and the zygote see)


@pytest.fixture
def ml_data(tmp_path, monkeypatch):
    """A fresh $ML_DATA folder for this test (also seen by scripts run with `run_script`)."""
    path = tmp_path / 'ml_data'
    path.mkdir()
    monkeypatch.setenv('ML_DATA', str(path))
    return path


def run_script(*args, cwd=REPO, env=None, timeout=600, fresh=False):
    """Runs `python SCRIPT ARGS...` from the repository root; returns the CompletedProcess.
    A child of the warm interpreter (tests/zygote.py: TensorFlow already imported, ~10 s of CPU
    less per run), unless `fresh`, `python -c/-m`, or a variable read at import differs from its."""
    full_env = dict(os.environ, **{k: str(v) for k, v in (env or {}).items()})
    argv = list(map(str, args))
    if fresh or NO_ZYGOTE or argv[0].startswith('-') or \
            import_time_env(full_env) != import_time_env(Zygote.env):
        return subprocess.run([sys.executable, *argv], cwd=cwd, env=full_env, check=False,
                              capture_output=True, text=True, timeout=timeout)
    return Zygote.get().run(argv, str(cwd), full_env, timeout)


# REALMIX_TESTS_FRESH=1: every script in a fresh interpreter (to compare, or to rule the zygote out).
NO_ZYGOTE = os.environ.get('REALMIX_TESTS_FRESH') == '1'


def import_time_env(env):
    return {k: v for k, v in env.items() if k.startswith(('TF_', 'CUDA', 'REALMIX_', 'PYTHON'))}


class Zygote:
    """This test process's warm interpreter (tests/zygote.py), started at its first use."""
    env: typing.ClassVar[dict] = dict(os.environ)   # what it starts with (libml's defaults set)
    _instance = None

    @classmethod
    def get(cls):
        if cls._instance is None or cls._instance.process.poll() is not None:
            cls._instance = cls()
        return cls._instance

    def __init__(self):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(REPO, 'tests', 'zygote.py'), str(theirs.fileno())],
            pass_fds=[theirs.fileno()], cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL)
        theirs.close()
        atexit.register(self.close)

    def close(self):
        """Ends it (it ends when its socket closes) and reaps it, so its CPU time is counted."""
        self.sock.close()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def answer(self, timeout):
        self.sock.settimeout(timeout)
        message = self.sock.recv(4096)
        if not message:
            raise RuntimeError(f'tests/zygote.py ended (exit {self.process.wait()})')
        return json.loads(message)

    def run(self, argv, cwd, env, timeout):
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            request = json.dumps({'argv': argv, 'cwd': cwd, 'env': env}).encode()
            socket.send_fds(self.sock, [request], [out.fileno(), err.fileno()])
            pid = self.answer(600)['pid']   # the first answer waits for TensorFlow's import
            try:
                status = self.answer(timeout)['status']
            except socket.timeout:
                os.killpg(pid, signal.SIGKILL)
                self.answer(60)
                raise subprocess.TimeoutExpired([sys.executable, *argv], timeout)
            text = lambda f: (f.seek(0), f.read().decode(errors='replace'))[1]
            return subprocess.CompletedProcess([sys.executable, *argv], status, text(out),
                                               text(err))


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
