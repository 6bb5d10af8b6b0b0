"""Small helpers every entry point needs: user errors, ML_DATA, atomic outputs.

Nothing here imports TensorFlow, so scripts can report bad input before paying for that import.
"""
import contextlib
import json
import os
import sys

from absl import app, flags, logging


class UserError(Exception):
    """A mistake of the user's (bad flag, missing file...): printed as one line, no traceback."""


def run(main):
    """Runs an absl `main`, turning UserError and Ctrl-C into a one-line message and exit status.

    Exit status: 2 for a user error (UserError, a bad flag value), 130 when interrupted.
    """
    prog = os.path.basename(sys.argv[0])

    def fail(message, status):
        print(f'{prog}: {message}', file=sys.stderr)
        sys.exit(status)

    def parse_flags(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:  # absl prints two lines and exits with 1
            fail(f'error: {" ".join(str(e).split())}; see --help.', 2)

    def wrapped(argv):
        if not any(a.startswith(('--verbosity', '-v=', '--v=')) or a == '-v' for a in sys.argv):
            logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown the progress bars
        try:
            return main(argv)
        except UserError as e:
            fail(f'error: {e}', 2)
        except KeyboardInterrupt:
            fail('interrupted; outputs that were not complete were not kept.', 130)

    app.run(wrapped, flags_parser=parse_flags)


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


def temporary_name(path):
    """Where `path` is written before it is complete: a hidden name in the same folder."""
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f'.{base}.partial-{os.getpid()}')


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

    An exception, Ctrl-C or a kill leaves `path` untouched (old content kept, or still absent).
    """
    path = os.path.abspath(path)
    if not overwrite and os.path.exists(path):
        raise UserError(f'{path} exists; remove it or choose another name.')
    output_folder(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    """Writes JSON atomically (sorted keys, indented)."""
    with atomic_output(path) as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write('\n')


def read_json(path, what='file'):
    """Reads JSON, turning a missing or malformed file into a UserError naming it."""
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f'{what} {path} does not exist.') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f'{what} {path} is not valid JSON ({e}).') from None

