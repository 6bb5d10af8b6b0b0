"""What every entry point needs: user errors, run() (one-line errors, exit statuses, signals),
ML_DATA. Writing outputs safely is libml/files.py.

Nothing here imports TensorFlow, so scripts can report bad input before paying for that import.
"""
import math
import os
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


def _interrupt(signum):
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _on_signal(signum, frame):
    """The first Ctrl-C or SIGTERM is acted on at the next safe point (check_interrupted); a
    second one stops at once.

    Raising from the handler itself is not safe: Python runs it between any two bytecodes of the
    main thread, also while TensorFlow's C++ code waits in a tf.data iterator (it polls for
    signals there), and an exception raised at that moment crashed create_split with a
    segmentation fault in about 1 run in 30 under load. Raised inside a weakref callback or a
    finaliser, it would also be printed as "Exception ignored" and lost (1 Ctrl-C in 4, before).
    """
    _signals.append(signum)
    if len(_signals) > 1:
        raise _interrupt(signum)
    what = 'SIGTERM' if signum == signal.SIGTERM else 'Ctrl-C'
    print(f'\n{what}: stopping at the next safe point ({what} again stops at once).',
          file=sys.stderr, flush=True)


def check_interrupted():
    """Raises the interrupt (Ctrl-C, SIGTERM) that the program received, if any.

    Called at safe points: every batch of records read, every few thousand records written,
    every training step and predicted batch, before every commit of an output (atomic_output),
    and by run() when `main` returns; so an interrupt always stops the program before its next
    output appears.
    """
    if _signals:
        raise _interrupt(_signals[0])


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
            from libml.files import storage_error  # files.py builds on this module
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
