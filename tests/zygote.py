"""A warm interpreter for the tests' script runs: imports TensorFlow once, then forks a child for
each `python SCRIPT ARGS` that tests/conftest.py's `run_script` asks for.

Why: starting TensorFlow 2.21 costs about 10 s of CPU per process (3,000 modules; Keras, and
through it matplotlib and scikit-learn, are imported eagerly), and the suite runs a few hundred
scripts, most of which then work for well under a second. A forked child starts with the import
done and runs the script as `python SCRIPT` would: its own process (pid, process group, exit
status, signals), `__main__`, `sys.argv`, `sys.path[0]`, working folder, environment, stdin from
/dev/null, stdout and stderr to the caller's files, atexit handlers at the end.

What it cannot show, so tests of it use a fresh interpreter (`run_script(..., fresh=True)`, and
every command of the README test): what happens while a script imports TensorFlow (libml's
environment defaults and its filter of TensorFlow's start-up lines), and anything set by
variables TensorFlow reads at import (conftest sends a request here only when the TF_*, CUDA_*
and REALMIX_* variables equal this process's). Nothing TensorFlow starts lazily (thread pools,
devices, the eager context) exists before the fork: this process only imports.

Protocol (one request at a time, on a SOCK_SEQPACKET socket inherited as fd `argv[1]`): the
caller sends a JSON {argv, cwd, env} with the child's stdout and stderr file descriptors
attached; this process answers {"pid": P} once the child exists and {"status": S} when it ends
(S as subprocess reports it: the exit code, or -N for a signal).
"""
import atexit
import json
import os
import runpy
import signal
import socket
import sys
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = list(sys.path)   # as a fresh interpreter's, but for sys.path[0] (the script's folder)
sys.path.insert(0, REPO)
# isort: off
import libml  # noqa: F401  (first, as in every entry point: TensorFlow's environment)
import tensorflow  # noqa: F401
# isort: on

MAX_MESSAGE = 1 << 20


def exit_code(error):
    """The exit status `python` gives a SystemExit (a message goes to stderr, status 1)."""
    if error.code is None:
        return 0
    if isinstance(error.code, int):
        return error.code
    print(error.code, file=sys.stderr)
    return 1


def child(request, out, err):
    """Becomes `python ARGV` in `cwd` with `env`; never returns."""
    os.setpgid(0, 0)   # its own group, as start_new_session gives: a timeout kills all it started
    stdin = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((stdin, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    argv = request['argv']
    sys.argv = list(argv)
    sys.path[:] = [os.path.dirname(os.path.abspath(argv[0]))] + PATH[1:]
    code = 0
    try:
        runpy.run_path(argv[0], run_name='__main__')
    except SystemExit as e:
        code = exit_code(e)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT   # Python ends by the signal itself: done below
    except BaseException:  # noqa: BLE001  (an uncaught error: traceback and status 1, as python)
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    if code == -signal.SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


def serve(sock):
    while True:
        message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 2)
        if not message:
            return  # the caller is gone
        request = json.loads(message)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            sock.close()
            try:
                child(request, *fds)
            finally:
                os._exit(70)   # only if child() itself failed
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps({'pid': pid}).encode())
        _, status = os.waitpid(pid, 0)
        sock.send(json.dumps({'status': os.waitstatus_to_exitcode(status)}).encode())


if __name__ == '__main__':
    serve(socket.socket(fileno=int(sys.argv[1])))
