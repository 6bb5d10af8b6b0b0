"""Small helpers every entry point needs: user errors, signals, ML_DATA, atomic outputs.

Nothing here imports TensorFlow, so scripts can report bad input before paying for that import.
"""
import contextlib
import errno
import glob
import json
import math
import os
import re
import signal
import sys
import threading

from absl import app, flags, logging


class UserError(Exception):
    """A mistake of the user's (bad flag, missing file...): printed as one line, no traceback."""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM: the program stops as on Ctrl-C (outputs that are
    not complete are removed, one line on stderr), with exit status 143 instead of 130.

    A KeyboardInterrupt, so every cleanup written for Ctrl-C also runs on SIGTERM, and
    `except Exception` does not swallow it.
    """


# Signals received (SIGINT, SIGTERM), in order; see check_interrupted.
_signals = []


def _on_signal(signum, frame):
    _signals.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def check_interrupted():
    """Raises again an interrupt (Ctrl-C, SIGTERM) that the program received but lost.

    Python runs a signal handler between any two bytecodes of the main thread, also inside a
    weakref callback or a finaliser, and an exception raised there is printed as "Exception
    ignored" and dropped. create_split lost about 1 Ctrl-C in 4 that way: TensorFlow's autograph
    caches each `Dataset.map` function in a WeakKeyDictionary, whose weakref callback runs when
    the reading pipeline is freed, and the split was then written in full (exit status 0).
    Loops over records and every commit of an output (atomic_output) call this, so an
    interrupt, lost or not, always stops the program before its next output appears.
    """
    if _signals:
        raise Terminated() if _signals[0] == signal.SIGTERM else KeyboardInterrupt()


def _unraisable(hook):
    """sys.unraisablehook that stays silent about an interrupt raised inside a finaliser: it is
    not lost (check_interrupted raises it again), so "Exception ignored" would only mislead."""
    def quiet(unraisable):
        if not (_signals and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            hook(unraisable)
    return quiet


def run(main):
    """Runs an absl `main` as an entry point: every way it can stop is one line on stderr.

    Exit status: 2 for a user error (UserError, a bad flag value, an I/O failure such as a full
    disk: see storage_error), 130 on Ctrl-C and 143 on SIGTERM (both raise in the main thread,
    so `finally` blocks and atomic_output remove incomplete outputs first).
    """
    prog = os.path.basename(sys.argv[0])

    def fail(message, status):
        print(f'{prog}: {message}', file=sys.stderr)
        sys.exit(status)

    def parse_flags(argv):
        try:
            argv = flags.FLAGS(argv)
        except flags.Error as e:  # absl prints two lines and exits with 1
            fail(f'error: {" ".join(str(e).split())}; see --help.', 2)
        for name in flags.FLAGS:  # absl accepts nan and inf, which no flag of ours means
            value = flags.FLAGS[name].value
            if isinstance(value, float) and not math.isfinite(value):
                fail(f'error: --{name}={value} is not a finite number.', 2)
        return argv

    def wrapped(argv):
        if not any(a.startswith(('--verbosity', '-v=', '--v=')) or a == '-v' for a in sys.argv):
            logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown the progress bars
        try:
            result = main(argv)
            check_interrupted()
            return result
        except UserError as e:
            fail(f'error: {e}', 2)
        except Exception as e:  # only I/O failures; anything else is a bug, with its traceback
            # An interrupt may come back as another exception: a KeyboardInterrupt raised while
            # TensorFlow's C++ code raises its own error becomes a RuntimeError ("MISMATCH of
            # original and normalized active exception types"). The user asked to stop: stop.
            check_interrupted()
            error = storage_error(e)
            if error is None:
                raise
            fail(f'error: {error}', 2)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _on_signal)
        sys.unraisablehook = _unraisable(sys.unraisablehook)
    try:
        app.run(wrapped, flags_parser=parse_flags)
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        fail(f'{"terminated (SIGTERM)" if terminated else "interrupted"}; outputs that were not '
             'complete were not kept.', 143 if terminated else 130)


def no_extra_args(argv, usage=''):
    """Rejects positional arguments that an entry point does not take."""
    if len(argv) > 1:
        raise UserError(f'unexpected argument(s): {" ".join(argv[1:])}. {usage}'.strip())


_warned_ml_data = False


def ml_data():
    """The data folder: $ML_DATA, or ./data (said once) when it is unset or empty."""
    global _warned_ml_data
    path = os.environ.get('ML_DATA', '')
    if not path:
        path = os.path.abspath('data')
        if not _warned_ml_data:
            logging.info('ML_DATA is not set: using %s', path)
            print(f'ML_DATA is not set: using {path}', file=sys.stderr)
            _warned_ml_data = True
    return path


def temporary_name(path, suffix=''):
    """Where `path` is written before it is complete: a hidden name in the same folder that holds
    this process's id, so a later run can tell a temporary of a killed run
    (remove_stale_temporaries).

    `suffix` names other scratch files that belong to the same output (e.g. '.spill').
    """
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f'.{base}.partial-{os.getpid()}{suffix}')


def _temporary_pid(name, path):
    """The process id in `name` if it is a temporary_name of `path`, else None."""
    m = re.fullmatch(rf'\.{re.escape(os.path.basename(path))}\.partial-(\d+)(\.\w+)?',
                     os.path.basename(name))
    return int(m.group(1)) if m and os.path.dirname(name) == os.path.dirname(path) else None


def remove_stale_temporaries(path):
    """Deletes the temporaries of `path` (temporary_name) left by a run that was killed: those
    whose process no longer exists. Says so in one line for each. Called before `path` is
    written again (atomic_output does it), so a SIGKILL costs no disk space for long."""
    path = os.path.abspath(path)
    folder, base = os.path.split(path)
    for tmp in glob.glob(os.path.join(glob.escape(folder), f'.{glob.escape(base)}.partial-*')):
        pid = _temporary_pid(tmp, path)
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # its writer is still running
        except ProcessLookupError:
            pass
        except OSError:  # e.g. another user's process: alive
            continue
        try:
            os.remove(tmp)
        except OSError:
            continue
        print(f'removed {tmp}, left by an interrupted run (process {pid})', file=sys.stderr)


def output_folder(path):
    """Creates the folder of the output file `path` if needed; a UserError when `path` cannot be
    written there (its folder is a file or not writable, or `path` is a folder). Returns the
    folder."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f'cannot create folder {folder}: a part of that path is a file, not a '
                        'folder; choose another output path.') from None
    except OSError as e:
        raise UserError(f'cannot create folder {folder}: {e.strerror}; choose another output '
                        'path.') from None
    if not os.access(folder, os.W_OK):
        raise UserError(f'folder {folder} is not writable; choose another output path or fix '
                        'its permissions.')
    if os.path.isdir(path):
        raise UserError(f'{path} is a folder; give a file name for the output.')
    return folder


@contextlib.contextmanager
def atomic_output(path, overwrite=True):
    """Yields a temporary path to write; renames it to `path` only if the block completes.

    An exception, Ctrl-C or SIGTERM leaves `path` untouched (old content kept, or still absent);
    a SIGKILL leaves a temporary that the next atomic_output of `path` removes. An I/O failure
    (full disk, no permission...) becomes a UserError naming `path` (storage_errors).
    """
    path = os.path.abspath(path)
    if not overwrite and os.path.exists(path):
        raise UserError(f'{path} exists; remove it or choose another name.')
    output_folder(path)
    remove_stale_temporaries(path)
    tmp = temporary_name(path)
    try:
        with storage_errors(path):
            yield tmp
            check_interrupted()  # an interrupt lost in a finaliser must not commit the output
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ----------------------------------------------------------------------------------------------
# Failures of the operating system's storage (full disk, permissions...), one mapping for all.

# What to do about the errors a user meets when writing outputs.
_STORAGE_ADVICE = {
    errno.ENOSPC: 'the disk is full: free some space or choose another folder',
    errno.EDQUOT: 'the disk quota is used up: free some space or choose another folder',
    errno.EFBIG: 'the file is larger than the system allows (a full disk, or a file-size limit '
                 'such as `ulimit -f`): free space, raise the limit or choose another folder',
    errno.EACCES: 'permission denied: fix the permissions or choose another path',
    errno.EPERM: 'permission denied: fix the permissions or choose another path',
    errno.EROFS: 'the file system is read-only: choose another folder',
    errno.EISDIR: 'it is a folder: give the path of a file',
    errno.ENOTDIR: 'a part of the path is a file, not a folder: choose another path',
    errno.ENOENT: 'it does not exist (was its folder moved or removed?)',
    errno.EIO: 'the device reported an input/output error: check the disk',
    errno.EMFILE: 'too many open files: raise `ulimit -n`',
}
# TensorFlow reports an OS error as "<file>; <strerror>" (tsl's IOError), as one of its own
# exceptions chosen by errno (ENOSPC: ResourceExhaustedError, EFBIG: OutOfRangeError, EACCES:
# PermissionDeniedError, EISDIR: FailedPreconditionError...), so the text tells it apart.
_STRERROR = {os.strerror(code): code for code in errno.errorcode}
_TF_IO_ERROR = re.compile(r'(?:.*\}\})?\s*(?P<file>[^;{}]*); (?P<reason>[^;\[]*?)\s*(?:\[.*)?')


def _os_failure(exc):
    """(errno, reason, file or None) of an OSError or of a TensorFlow error made from one;
    None for any other exception."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno, exc.strerror or os.strerror(exc.errno), exc.filename
    tf = sys.modules.get('tensorflow')  # not imported here: no TensorFlow, no TensorFlow error
    if tf is not None and isinstance(exc, tf.errors.OpError):
        lines = (exc.message or '').splitlines()
        m = _TF_IO_ERROR.fullmatch(lines[0]) if lines else None
        if m and m.group('reason') in _STRERROR:
            return _STRERROR[m.group('reason')], m.group('reason'), m.group('file').strip() or None
    return None


def storage_error(exc, path=None):
    """The UserError (one line: the file, the reason, what to do) for an I/O failure of the
    operating system: an OSError, or a TensorFlow error (tf.errors.OpError) raised by a reader or
    writer for one. None for any other exception (a bug keeps its traceback).

    path: the output being written, named instead of its temporary (temporary_name) or of the
    files it is made of (a checkpoint `prefix` is written as `prefix.index`, `prefix_temp/...`).
    """
    found = _os_failure(exc)
    if found is None:
        return None
    code, reason, filename = found
    if path and (not filename or filename.startswith(path)
                 or _temporary_pid(filename, path) is not None):
        what = f'cannot write {path}'
    else:
        what = filename or 'input/output error'
    advice = _STORAGE_ADVICE.get(code)
    return UserError(f'{what}: {reason}' + (f'; {advice}.' if advice else '.'))


@contextlib.contextmanager
def storage_errors(path):
    """Turns an I/O failure inside the block into a UserError naming `path` (see storage_error):
    a full disk or a missing permission is a one-line message, not a traceback.

    Every output written through atomic_output already gets this; use it directly around other
    writes of `path`, e.g. the trainer's checkpoint saves:
        with storage_errors(prefix):
            checkpoint.write(prefix)
    """
    try:
        yield
    except Exception as e:
        error = storage_error(e, os.path.abspath(path))
        if error is None:
            raise
        raise error from None


def write_json(path, obj):
    """Writes JSON atomically (sorted keys, indented)."""
    with atomic_output(path) as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write('\n')


def read_json(path, what='file', fix=None):
    """Reads JSON, turning a missing or malformed file into a UserError naming it (and saying
    `fix`, what to do about a malformed one, when given)."""
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f'{what} {path} does not exist.') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f'{what} {path} is not valid JSON ({e})' + (f'; {fix}' if fix else '.')
                        ) from None

