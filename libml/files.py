"""Writing outputs safely: temporary names and atomic renames, the temporaries a killed run left,
one mapping of storage failures (full disk, permissions) to one-line errors, and JSON files.

Nothing here imports TensorFlow (a TensorFlow I/O error is recognised if TensorFlow is loaded).
"""
import contextlib
import errno
import glob
import json
import os
import re
import shutil
import sys

from libml.utils import UserError, check_interrupted


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
            _remove(tmp)
        except OSError:
            continue
        print(f'removed {tmp}, left by an interrupted run (process {pid})', file=sys.stderr)


def _remove(path):
    """Removes a file, or a folder and everything in it."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


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


def check_new_output(path, overwrite=False, flag='--overwrite'):
    """The absolute `path`; a UserError if it exists and `overwrite` is not set (the flag that
    allows replacing it is named in the message)."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.lexists(path) and not overwrite:
        raise UserError(f'{path} exists; remove it, choose another folder or pass {flag} to '
                        'replace it.')
    return path


@contextlib.contextmanager
def atomic_folder(path, overwrite=False, flag='--overwrite'):
    """Yields a new, empty temporary folder to fill; it becomes `path` only if the block completes
    (as atomic_output does for a file).

    An existing `path` is a UserError unless `overwrite` (the flag that allows it is named in the
    message); then it is replaced only once the new folder is complete.
    """
    path = check_new_output(path, overwrite, flag)
    tmp = temporary_name(path)
    output_folder(tmp)
    remove_stale_temporaries(path)
    old = temporary_name(path, '.old')
    try:
        with storage_errors(path):
            os.mkdir(tmp)
            yield tmp
            check_interrupted()  # an interrupt lost in a finaliser must not commit the output
            if os.path.lexists(path):
                os.replace(path, old)
            os.replace(tmp, path)
            if os.path.lexists(old):
                _remove(old)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


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

