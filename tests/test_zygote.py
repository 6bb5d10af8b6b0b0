"""tests/zygote.py, the warm interpreter most script runs of the suite are children of: a child
behaves as `python SCRIPT` would, and a fresh interpreter still hides TensorFlow's start-up lines
(what the zygote's children cannot show)."""
import json
import subprocess
import textwrap

import pytest
from conftest import Zygote, assert_user_error, run_script

PROBE = '''
import atexit, json, os, sys
atexit.register(lambda: print('atexit ran'))
print(json.dumps({'name': __name__, 'argv': sys.argv, 'cwd': os.getcwd(), 'path0': sys.path[0],
                  'env': os.environ.get('PROBE_VALUE'), 'stdin': sys.stdin.read()}))
print('to stderr', file=sys.stderr)
how = sys.argv[1]
if how == 'exit':
    sys.exit(3)
if how == 'message':
    sys.exit('a one-line message')
if how == 'raise':
    raise ValueError('boom')
if how == 'interrupt':
    raise KeyboardInterrupt
if how == 'sleep':
    import time
    time.sleep(60)
'''


@pytest.fixture
def probe(tmp_path):
    path = tmp_path / 'bin' / 'probe.py'
    path.parent.mkdir()
    path.write_text(textwrap.dedent(PROBE))
    return path


@pytest.mark.parametrize('how, status', [('ok', 0), ('exit', 3), ('message', 1), ('raise', 1),
                                         ('interrupt', -2)])
def test_a_child_behaves_as_python_script_would(probe, tmp_path, how, status):
    runs = [run_script(probe, how, cwd=tmp_path, env={'PROBE_VALUE': 'x'}, fresh=fresh)
            for fresh in (True, False)]
    fresh, child = runs
    assert child.returncode == fresh.returncode == status
    assert child.stdout == fresh.stdout
    # Tracebacks name the same lines; the zygote's show the frames that ran the script above them.
    assert child.stderr.splitlines()[-1:] == fresh.stderr.splitlines()[-1:]
    assert ('Traceback' in child.stderr) == ('Traceback' in fresh.stderr) == (
        how in ('raise', 'interrupt'))
    facts = json.loads(child.stdout.splitlines()[0])
    assert facts == {'name': '__main__', 'argv': [str(probe), how], 'cwd': str(tmp_path),
                     'path0': str(probe.parent), 'env': 'x', 'stdin': ''}
    assert child.stdout.splitlines()[-1] == 'atexit ran' and 'to stderr' in child.stderr


def test_a_child_that_outlives_its_timeout_is_killed(probe, tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        run_script(probe, 'sleep', cwd=tmp_path, timeout=3)
    # The zygote serves the next request.
    assert run_script(probe, 'ok', cwd=tmp_path).returncode == 0


def test_variables_read_at_import_get_a_fresh_interpreter(probe, tmp_path, monkeypatch):
    zygote = Zygote.get()
    run_script(probe, 'ok', cwd=tmp_path, env={'TF_CPP_MIN_LOG_LEVEL': '0'})
    assert zygote.process.poll() is None
    # A request with another TensorFlow setting never reaches it: shown by a dead zygote, which
    # would fail the request, and is only restarted by the next one that needs it.
    zygote.sock.close()
    zygote.process.wait(30)
    for env in ({'TF_CPP_MIN_LOG_LEVEL': '0'}, {'REALMIX_TF_IMPORT_LOG': '1'}):
        assert run_script(probe, 'ok', cwd=tmp_path, env=env).returncode == 0
    assert Zygote._instance is zygote
    assert run_script(probe, 'ok', cwd=tmp_path).returncode == 0 and Zygote._instance is not zygote


def test_a_fresh_interpreter_shows_the_same_one_line_error(ml_data, tmp_path):
    """libml hides TensorFlow's start-up lines in a fresh process (the zygote's children never
    print them): the user's error is the same, and the last line, either way."""
    args = ('realmix.py', '--dataset=nosuch.1@10-5', f'--train_dir={tmp_path}')
    fresh = assert_user_error(run_script(*args, fresh=True), 'nosuch.1@10-label.tfrecord')
    child = assert_user_error(run_script(*args), 'nosuch.1@10-label.tfrecord')
    assert fresh.stderr == child.stderr and fresh.stdout == child.stdout
