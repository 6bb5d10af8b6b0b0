"""Shared fixtures: a private $ML_DATA per test and a runner for the command-line scripts."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


@pytest.fixture
def ml_data(tmp_path, monkeypatch):
    """A fresh $ML_DATA folder for this test (also seen by scripts run with `run_script`)."""
    path = tmp_path / 'ml_data'
    path.mkdir()
    monkeypatch.setenv('ML_DATA', str(path))
    return path


def run_script(*args, cwd=REPO, env=None, timeout=600):
    """Runs `python SCRIPT ARGS...` from the repository root; returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def assert_ok(result):
    assert result.returncode == 0, f'exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}'
    return result


def assert_user_error(result, *words):
    """A user mistake: non-zero exit, no traceback, and a message naming each of `words`."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, f'{word!r} not in:\n{result.stderr}'
    return result
