"""Shared library of RealMix-TF2: data, augmentation, models, layers and the trainer.

Importing the package sets two TensorFlow environment defaults before any module here imports
TensorFlow (a user's own setting always wins):
- TF_ENABLE_ONEDNN_OPTS=1: on AMD CPUs TensorFlow leaves oneDNN off, and a 32x32 training step
  runs about 1.7x slower without it (see benchmarks/). It changes nothing on GPUs.
- TF_CPP_MIN_LOG_LEVEL=2: hides the INFO and WARNING lines of TensorFlow's C++ runtime, so tqdm
  bars and our one-line errors stay readable (e.g. "Local rendezvous is aborting with status:
  DATA_LOSS", printed above the error that names the damaged file). Its errors still show.

TensorFlow 2.21 also prints two lines at import that TF_CPP_MIN_LOG_LEVEL does not reach (its
C++ logging is not initialised yet): "WARNING: All log messages before absl::InitializeLog() ..."
and "... port.cc:...] oneDNN custom operations are on ...", each twice. Newcomers read them as
errors. While TensorFlow is first imported, its file descriptor 2 goes to a temporary file;
afterwards every line of it except those two is written to stderr, so real errors stay visible.
REALMIX_TF_IMPORT_LOG=1 turns this filter off.
"""
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

_IMPORT_NOISE = re.compile(r'(WARNING: All log messages before absl::InitializeLog\(\) is called'
                           r'|I\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on)')


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Wraps the first import of `tensorflow` so its two start-up notices are dropped."""

    def find_spec(self, name, path=None, target=None):
        if name != 'tensorflow':
            return None
        sys.meta_path.remove(self)  # once; and find_spec below must not find us again
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader.exec_module = _filtered_stderr(spec.loader.exec_module)
        return spec


def _filtered_stderr(exec_module):
    def run(module):
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as log:
            os.dup2(log.fileno(), 2)
            try:
                exec_module(module)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                log.seek(0)
                kept = [line for line in log.read().decode(errors='replace').splitlines(True)
                        if not _IMPORT_NOISE.match(line)]
                if kept:
                    sys.stderr.write(''.join(kept))
                    sys.stderr.flush()
    return run


if 'tensorflow' not in sys.modules and os.environ.get('REALMIX_TF_IMPORT_LOG') != '1':
    sys.meta_path.insert(0, _QuietTensorFlowImport())
