#!/usr/bin/env python3
"""Training-speed benchmark: the RealMix step and loop the trainer really runs, against the CPU's
fp32 GEMM peak and against USB's (semilearn) MixMatch step, all measured in one run.

  python benchmarks/bench_train.py [--quick] [--peer_python=/work/peer_venv/bin/python]

What is timed (WRN-28-2: filters 32, repeat 4; batch 64, nu 2, 10 classes; synthetic TFRecords
written to a temporary $ML_DATA with the helpers of tests/conftest.py):
- the bare step: `Trainer._train_step(batch, images)` of `libml.train.Trainer(RealMix(...))` on
  one fixed batch taken from `Trainer._batches(0)` (warm-up steps, then timed steps; medians).
  Configurations: 32x32 (scales 3), 8x8 with scales 3 (as USB's 8x8 rows) and 8x8 with
  the trainer's default scales (1), each with --jit_compile off and on;
- the fp32 GEMM peak: `tf.linalg.matmul` of two N x N matrices in this process, same threads;
- USB's MixMatch step: benchmarks/peer/usb_mixmatch_step.py, run with the Python of the peer
  virtualenv given by --peer_python (benchmarks/README.md, "The USB peer");
- the whole loop: `Trainer.train()` (input pipeline, augmentation, EMA, tqdm) in one chunk of
  --loop_kimg per round (resuming from the previous chunk's checkpoint), images/s between the 2nd
  and the last step of a chunk (no evaluation inside that window), against the bare step of the
  same trainer measured just before and after each chunk.
- FixMatch (configuration 32fix): the same, with `fixmatch.FixMatch` (uratio 7: 64 labeled and 2
  views of 448 unlabeled images, 960 images per step, one forward pass) and the paper's SGD; its
  loop includes RandAugment of the strong view in the input pipeline.
The configurations alternate round by round (GEMM, ours, USB, ...) so that load from other
processes hits all of them alike; per-round ratios and pooled medians are printed. The XLA
configurations are built and timed after the others (XLA in a process slowed its later oneDNN
steps), each round beside the XLA-off step of the same shape.

Throughput counts batch*(1+nu) = 192 trained images per step, in the USB rows too; nominal
FLOPs are 192 forward+backward passes plus 128 label-guess forward passes (301.6 GFLOP at 32x32,
18.85 at 8x8 with 3 scales).
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import libml  # noqa: E402,F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow is imported)

import dataclasses  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402

import fixmatch  # noqa: E402  (defines the FixMatch flags; we use its class and optimizer)
import realmix  # noqa: E402  (defines the RealMix flags; we only use its class)
from libml.utils import UserError, no_extra_args, run  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool('quick', False, 'A short run (~3 minutes): 1 round, fewer steps.')
flags.DEFINE_string('peer_python', None, 'Python of the peer virtualenv (torch and semilearn '
                    '0.3.2; benchmarks/README.md, "The USB peer"); not given or not found: USB '
                    'is skipped.')
flags.DEFINE_integer('rounds', 0, 'Rounds of the alternation (0: 3, --quick: 1).')
flags.DEFINE_integer('steps', 0, 'Timed 32x32 steps per configuration and round (0: 8, quick 4); '
                     '8x8 configurations run 4x as many.')
flags.DEFINE_integer('warmup', 3, 'Untimed steps after building a configuration (the first '
                     'traces and compiles); every later round re-warms with one step.')
flags.DEFINE_integer('loop_kimg', 1, 'kimg of each timed Trainer.train() chunk at 32x32 (one '
                     'chunk per round, between bare-step blocks); the 8x8 loop trains 4x as many.')
flags.DEFINE_integer('peak_size', 4096, 'Matrix side of the GEMM peak measurement.')
flags.DEFINE_integer('peak_reps', 0, 'GEMMs per round (0: 4, quick 3).')
flags.DEFINE_list('configs', None, 'Step configurations to time (default: all of '
                  '32,32xla,8s3,8s3xla,8,8xla,32fix; --quick leaves out 8xla).')
flags.DEFINE_bool('loop', True, 'Time the whole Trainer.train() loop.')
flags.DEFINE_integer('intra_op', 0, 'TensorFlow intra-op threads (0: TF default, as the trainer).')
flags.DEFINE_integer('inter_op', 0, 'TensorFlow inter-op threads (0: TF default, as the trainer).')
flags.DEFINE_string('json_out', None, 'Also write every measurement to this JSON file.')
flags.DEFINE_bool('precision_speed', False, 'Instead of the above: step time of '
                  '--precision=float32 against bfloat16, side by side (configurations --configs, '
                  'default 32,8s3).')
flags.DEFINE_bool('precision_accuracy', False, 'Instead of the above: test accuracy of float32 '
                  'against bfloat16 on digits@50 (benchmarks/compare.py\'s RealMix runs, split '
                  'seeds --accuracy_seeds), finished runs reused.')
flags.DEFINE_string('accuracy_dir', 'experiments/bench_precision', 'Root of the '
                    '--precision_accuracy runs (one folder per precision, laid out as '
                    'compare.py\'s --train_dir).')
flags.DEFINE_list('accuracy_seeds', ['1', '2', '3'], 'Split seeds of --precision_accuracy.')
flags.DEFINE_string('work_dir', None, 'Folder for the synthetic data and runs (default: a '
                    'temporary folder, removed at the end).')

BATCH, NU, NCLASS, FILTERS, REPEAT = 64, 2, 10, 32, 4
TRAINED = BATCH * (1 + NU)          # images trained per step (USB's rows count the same)
URATIO = 7                          # FixMatch: 64 labeled + 2 views of 448 unlabeled per step
FIXMATCH_TRAINED = BATCH * (1 + 2 * URATIO)
GOALS = {'peak32': 0.8, 'peak8': 0.45, 'usb32': 1.3, 'loop': 0.9}
# name: (image side, scales (0 = trainer default), jit_compile, label)
CONFIGS = {
    '32': (32, 3, False, '32x32 scales 3'),
    '32xla': (32, 3, True, '32x32 scales 3 XLA'),
    '8s3': (8, 3, False, '8x8 scales 3'),
    '8s3xla': (8, 3, True, '8x8 scales 3 XLA'),
    '8': (8, 0, False, '8x8 scales 1 (default)'),
    '8xla': (8, 0, True, '8x8 scales 1 (default) XLA'),
    '32fix': (32, 3, False, '32x32 scales 3 FixMatch uratio 7'),   # SGD, the paper's settings
}


# ----------------------------------------------------------------------------------------------
# Nominal FLOPs (multiply-add = 2 FLOPs) of libml.models.WideResNet. The forward count equals
# torch.utils.flop_counter's on USB's wrn_28_2 (0.4287 GFLOP per 32x32 image, 0.0268 at 8x8).

def wrn_macs(hw, channels=3, filters=FILTERS, repeat=REPEAT, scales=3, nclass=NCLASS):
    """(forward MACs per image, MACs of the stem conv) of libml.models.WideResNet."""
    stem = hw * hw * 9 * channels * 16
    macs, cin, side = stem, 16, hw
    for s in range(scales):
        cout = filters << s
        for i in range(repeat):
            if s > 0 and i == 0:
                side = (side + 1) // 2
            pixels = side * side
            macs += pixels * 9 * cin * cout + pixels * 9 * cout * cout
            if cin != cout:
                macs += pixels * cin * cout
            cin = cout
    return macs + cin * nclass, stem


def step_gflop(hw, scales, fixmatch_step=False):
    """Nominal GFLOP of one step: 192 images forward+backward (no input gradient of the stem),
    128 label-guess forwards; FixMatch: 960 images forward+backward."""
    fwd, stem = wrn_macs(hw, scales=scales)
    train = 2 * (3 * fwd - stem)
    if fixmatch_step:
        return FIXMATCH_TRAINED * train / 1e9
    return (TRAINED * train + BATCH * NU * 2 * fwd) / 1e9


# ----------------------------------------------------------------------------------------------
# Small helpers.

def median(xs):
    return statistics.median(xs) if xs else float('nan')


def fmt(x, nd=3):
    return '-' if x is None or x != x else f'{x:.{nd}f}'


def loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float('nan')


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            text = f.read()
    except OSError:
        return platform.processor() or 'unknown CPU'
    name = next((l.split(':', 1)[1].strip() for l in text.splitlines() if l.startswith('model name')),
                'unknown CPU')
    flags_line = next((l for l in text.splitlines() if l.startswith('flags')), '')
    isa = [f for f in ('avx2', 'fma', 'avx512f', 'amx_tile') if f' {f}' in flags_line]
    return f'{name} ({", ".join(isa) or "no AVX2"})'


def load_conftest():
    """tests/conftest.py as a module (its dataset writers), without pytest's fixture machinery."""
    spec = importlib.util.spec_from_file_location('bench_conftest', os.path.join(REPO, 'tests', 'conftest.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------
# Measurements.

class Peak:
    """fp32 GEMM GFLOP/s of tf.linalg.matmul in this process."""

    def __init__(self, n):
        import tensorflow as tf
        self.n = n
        a = tf.random.stateless_normal([n, n], [1, 2])
        b = tf.random.stateless_normal([n, n], [3, 4])
        self.args = (a, b)
        self.fn = tf.function(lambda a, b: tf.reduce_sum(tf.linalg.matmul(a, b)))
        self.fn(*self.args).numpy()
        self.samples, self.rounds = [], []

    def measure(self, reps):
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            self.fn(*self.args).numpy()
            out.append(2 * self.n ** 3 / (time.perf_counter() - t0) / 1e9)
        self.samples += out
        self.rounds.append(median(out))
        return self.rounds[-1]


class Step:
    """One configuration of the real trainer and its fixed batch: timed `_train_step` calls."""

    def __init__(self, key, root, train_dir, conftest, datasets, precision='float32'):
        import tensorflow as tf
        from libml import datasets as dataset_lib, train
        self.key = key
        self.hw, scales, self.jit, self.label = CONFIGS[key]
        if precision != 'float32':
            self.label += ' ' + precision
        name = datasets.get(self.hw)
        if name is None:
            name = datasets[self.hw] = make_dataset(root, self.hw, conftest)
        dataset = dataset_lib.resolve(name)
        config = train.Config(train_dir=train_dir, batch=BATCH, filters=FILTERS, repeat=REPEAT,
                              scales=scales, jit_compile=self.jit, precision=precision,
                              train_kimg=1 << 16,
                              report_kimg=1 << 16, save_kimg=1 << 16, epochs=1)
        self.fixmatch = key.endswith('fix')
        self.trained = FIXMATCH_TRAINED if self.fixmatch else TRAINED
        if self.fixmatch:
            config = dataclasses.replace(config, **fixmatch.TRAINER_DEFAULTS)
            algorithm = fixmatch.FixMatch(dataset.nclass, uratio=URATIO)
        else:
            algorithm = realmix.RealMix(dataset.nclass, config.train_kimg, nu=NU)
        self.trainer = train.Trainer(algorithm, dataset, config)
        self.scales = self.trainer.scales
        self.gflop = step_gflop(self.hw, self.scales, self.fixmatch)
        # Take one batch and stop the input pipeline: its prefetch threads must not run beside
        # the timed steps of this or other configurations.
        iterator = iter(self.trainer._batches(0))
        self.batch = tf.nest.map_structure(tf.identity, next(iterator))
        del iterator
        gc.collect()
        self.images = tf.constant(0.0, tf.float32)
        self.times, self.util, self.rounds = [], [], []
        self.finite = True
        t0 = time.perf_counter()
        self.run(1)
        self.first_call = time.perf_counter() - t0
        self.run(max(FLAGS.warmup - 1, 0))

    def run(self, n):
        """n steps -> [(wall seconds, process CPU seconds / wall seconds)]."""
        out = []
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            stats = self.trainer._train_step(self.batch, self.images)
            loss = float(stats['losses/overall'])
            dt = time.perf_counter() - t0
            out.append((dt, (time.process_time() - c0) / dt))
            self.finite &= loss == loss and abs(loss) != float('inf')
        return out

    def measure(self, n, record=True):
        """Median seconds of n steps (after one re-warming step); `record`: add them to the
        round statistics."""
        self.run(1)  # re-warm after the other configurations ran
        out = self.run(n)
        if record:
            self.times += [t for t, _ in out]
            self.util += [u for _, u in out]
            self.rounds.append(median([t for t, _ in out]))
        return median([t for t, _ in out])

    @property
    def median(self):
        return median(self.times)


def make_dataset(root, hw, conftest):
    """A 10-class semi-supervised split of hw x hw x 3 images: 250 labels, 2048 unlabeled +
    100 validation, 200 test. Returns its --dataset name."""
    name = f'bench{hw}'
    conftest.make_ssl_dataset(root, name=name, seed=1, shape=(hw, hw, 3), nclass=NCLASS,
                              n_label=250, n_unlabel=2048 + 100, n_test=200)
    return f'{name}.1@250-100'


class Peer:
    """A peer's timing script run in a subprocess; each call returns its RESULT JSON (or None)."""

    def __init__(self, label, argv, env=None):
        self.label, self.argv, self.env = label, argv, env
        self.results, self.errors = [], []

    def measure(self):
        env = dict(os.environ, **(self.env or {}))
        try:
            proc = subprocess.run(self.argv, capture_output=True, text=True, timeout=1800,
                                  cwd=os.path.dirname(self.argv[1]), env=env)
        except (OSError, subprocess.TimeoutExpired) as e:
            self.errors.append(str(e))
            return None
        lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
        if proc.returncode or not lines:
            tail = (proc.stderr.strip().splitlines() or ['(no output)'])[-3:]
            self.errors.append(f'exit {proc.returncode}: ' + ' | '.join(tail))
            return None
        result = json.loads(lines[-1][len('RESULT '):])
        self.results.append(result)
        return result['median_s']

    @property
    def times(self):
        return [t for r in self.results for t in r['times_s']]

    @property
    def util(self):
        return [u for r in self.results for u in r.get('cpu_util', [])]

    @property
    def rounds(self):
        return [r['median_s'] for r in self.results]

    @property
    def median(self):
        return median(self.times)


def time_loop(step, kimg, chunk):
    """Trains step.trainer with Trainer.train() up to chunk*kimg kimg (one report period of
    `kimg`; from chunk 2 on it resumes from the previous chunk's checkpoint); images/s from the
    entry of the 2nd `_train_step` call to the entry of the last (input pipeline, augmentation,
    EMA, bookkeeping and tqdm included; the first step, evaluation and checkpoints excluded)."""
    trainer = step.trainer
    trainer.config.train_kimg = chunk * kimg
    trainer.config.report_kimg = kimg
    trainer.config.epochs = 1 << 20
    entries = []
    inner = trainer._train_step

    def timed(batch, images):
        entries.append((time.perf_counter(), time.process_time()))
        return inner(batch, images)

    trainer._train_step = timed
    try:
        t0 = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - t0
    finally:
        trainer._train_step = inner
    steps = len(entries) - 2
    (t2, c2), (tn, cn) = entries[1], entries[-1]
    return {'kimg': kimg, 'steps_timed': steps, 'seconds': tn - t2, 'train_call_s': total,
            'img_per_s': steps * step.trained / (tn - t2), 'step_s': (tn - t2) / steps,
            'cpu_util': (cn - c2) / (tn - t2)}


# ----------------------------------------------------------------------------------------------
# The run.

def main(argv):
    no_extra_args(argv)
    quick = FLAGS.quick
    rounds = FLAGS.rounds or (1 if quick else 3)
    steps = FLAGS.steps or (4 if quick else 8)
    peak_reps = FLAGS.peak_reps or (3 if quick else 4)
    loop_kimg = FLAGS.loop_kimg
    keys = FLAGS.configs or [k for k in CONFIGS if not (quick and k == '8xla')]
    unknown = [k for k in keys if k not in CONFIGS]
    if unknown:
        raise UserError(f'--configs: unknown {", ".join(unknown)}; valid: {", ".join(CONFIGS)}.')

    import tensorflow as tf
    if FLAGS.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op)
    if FLAGS.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op)
    if FLAGS.precision_accuracy:
        return precision_accuracy(FLAGS.accuracy_dir, [int(s) for s in FLAGS.accuracy_seeds])
    if FLAGS.precision_speed:
        return precision_speed(FLAGS.configs or ['32', '8s3'], rounds, steps)

    peers = {}
    peer_note = None
    usb_script = os.path.join(REPO, 'benchmarks', 'peer', 'usb_mixmatch_step.py')
    if not FLAGS.peer_python:
        peer_note = ('USB skipped: no --peer_python given (see benchmarks/README.md, '
                     '"The USB peer").')
    elif not (shutil.which(FLAGS.peer_python) or os.access(FLAGS.peer_python, os.X_OK)):
        peer_note = f'USB skipped: --peer_python={FLAGS.peer_python} not found or not executable.'
    else:
        for hw, n in ((32, steps), (8, 4 * steps)):
            if any(CONFIGS[k][0] == hw and CONFIGS[k][1] == 3 for k in keys):
                peers[f'usb{hw}'] = Peer(f'USB 0.3.2 MixMatch {hw}x{hw}', [
                    FLAGS.peer_python, usb_script, '--hw', str(hw), '--warmup', '3',
                    '--steps', str(n), '--threads', '2'])

    work = FLAGS.work_dir or tempfile.mkdtemp(prefix='bench_train_')
    root = os.path.join(work, 'ml_data')
    os.makedirs(root, exist_ok=True)
    os.environ['ML_DATA'] = root
    started = time.perf_counter()
    load_start = loadavg()
    print(f'bench_train: TF {tf.__version__}, TF_ENABLE_ONEDNN_OPTS='
          f'{os.environ.get("TF_ENABLE_ONEDNN_OPTS")}, {os.cpu_count()} CPUs: {cpu_model()}; '
          f'threads intra/inter {FLAGS.intra_op or "default"}/{FLAGS.inter_op or "default"}; '
          f'{"quick" if quick else "full"} run: {rounds} round(s), {steps} steps '
          f'(x4 at 8x8), loop {loop_kimg} kimg; load average {load_start}', flush=True)
    if peer_note:
        print(peer_note, flush=True)
    try:
        conftest = load_conftest()
        datasets = {}
        peak = Peak(FLAGS.peak_size)
        ours = {}

        def build(key):
            t0 = time.perf_counter()
            ours[key] = Step(key, root, os.path.join(work, 'runs'), conftest, datasets)
            print(f'  built {ours[key].label}: first call {ours[key].first_call:.1f} s '
                  f'(setup {time.perf_counter() - t0:.1f} s)', flush=True)

        # XLA configurations are built and timed last: once XLA has run in a process, the
        # oneDNN steps of that process were measured 8-25% slower (8x8), so they would disturb
        # the main rounds.
        plain = [k for k in keys if not CONFIGS[k][2]]
        xla = [k for k in keys if CONFIGS[k][2]]
        for key in plain:
            build(key)

        # Alternate: GEMM, then each of ours followed by its USB counterpart.
        order = []
        for key in plain:
            order.append(('ours', key))
            hw, scales, jit, _ = CONFIGS[key]
            if not jit and scales == 3 and f'usb{hw}' in peers:
                order.append(('peer', f'usb{hw}'))
        round_loads = []
        for r in range(rounds):
            round_loads.append(loadavg())
            line = [f'round {r + 1}/{rounds}: load {round_loads[-1]}, '
                    f'GEMM {peak.measure(peak_reps):.0f} GFLOP/s']
            for kind, key in order:
                if kind == 'ours':
                    s = ours[key]
                    t = s.measure(steps if s.hw == 32 else 4 * steps)
                    line.append(f'{key} {t:.3f}s')
                else:
                    t = peers[key].measure()
                    line.append(f'{key} ' + (f'{t:.3f}s' if t else 'FAILED'))
            print('  ' + ', '.join(line), flush=True)

        # The whole loop in `rounds` chunks of loop_kimg (x4 at 8x8), each between two bare-step
        # blocks of the same trainer: ratio = chunk img/s / bare img/s (mean of its neighbours).
        loops = {}
        if FLAGS.loop:
            for key, kimg in (('32', loop_kimg), ('8s3', 4 * loop_kimg), ('32fix', loop_kimg)):
                if key not in ours:
                    continue
                s = ours[key]
                n = steps if s.hw == 32 else 4 * steps
                bare = [s.measure(n, record=False)]
                chunks = []
                for chunk in range(1, rounds + 1):
                    chunks.append(time_loop(s, kimg, chunk))
                    bare.append(s.measure(n, record=False))
                    chunks[-1]['ratio'] = bare_ratio = (
                        chunks[-1]['img_per_s'] * (bare[-2] + bare[-1]) / 2 / s.trained)
                    print(f'  loop {s.label} chunk {chunk}/{rounds}: {chunks[-1]["steps_timed"]} '
                          f'steps {chunks[-1]["step_s"]:.3f} s/step, bare before/after '
                          f'{bare[-2]:.3f}/{bare[-1]:.3f} s: ratio {bare_ratio:.2f}', flush=True)
                timed = sum(c['steps_timed'] for c in chunks)
                seconds = sum(c['seconds'] for c in chunks)
                loops[key] = {
                    'chunks': chunks, 'bare_s': bare, 'steps_timed': timed,
                    'step_s': seconds / timed, 'img_per_s': timed * s.trained / seconds,
                    'bare_img_per_s': s.trained / median(bare),
                    'ratio': median([c['ratio'] for c in chunks]),
                    'cpu_util': sum(c['cpu_util'] * c['seconds'] for c in chunks) / seconds}
        peak.measure(peak_reps)

        # XLA on, each beside XLA off of the same shape (off/on ratio per round).
        xla_off = {}
        for key in xla:
            build(key)
        for r in range(rounds if xla else 0):
            line = [f'XLA round {r + 1}/{rounds}: load {loadavg()}']
            for key in xla:
                s = ours[key]
                n = steps if s.hw == 32 else 4 * steps
                off = key[:-3]
                if off in ours:
                    xla_off.setdefault(key, []).append(ours[off].measure(n, record=False))
                    line.append(f'{off} {xla_off[key][-1]:.3f}s')
                line.append(f'{key} {s.measure(n):.3f}s')
            print('  ' + ', '.join(line), flush=True)
    finally:
        if not FLAGS.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    report(peak, ours, peers, loops, xla_off, keys, rounds, round_loads, load_start, started,
           peer_note)


def report(peak, ours, peers, loops, xla_off, keys, rounds, round_loads, load_start, started,
           peer_note):
    peak_gflops = median(peak.samples)
    print()
    print(f'fp32 GEMM peak (tf.linalg.matmul {peak.n}x{peak.n}, this process): median '
          f'{peak_gflops:.1f} GFLOP/s [{min(peak.samples):.1f}-{max(peak.samples):.1f}] over '
          f'{len(peak.samples)} GEMMs, per round {", ".join(f"{x:.0f}" for x in peak.rounds)}')
    print()
    header = ('| step (batch 64, nu 2) | XLA | first call s | median s | best round s | min-max s '
              '| steps | img/s | GFLOP/step | GFLOP/s | of peak | cpu util |')
    print(header)
    print('|---' * (header.count('|') - 1) + '|')
    rows = {}
    for key in keys:
        s = ours[key]
        m = s.median
        rows[key] = {'label': s.label, 'hw': s.hw, 'scales': s.scales, 'jit_compile': s.jit,
                     'first_call_s': s.first_call, 'median_s': m, 'min_s': min(s.times),
                     'max_s': max(s.times), 'round_medians_s': s.rounds, 'steps': len(s.times),
                     'img_per_s': s.trained / m, 'gflop': s.gflop, 'gflops': s.gflop / m,
                     'of_peak': s.gflop / m / peak_gflops, 'cpu_util': median(s.util),
                     'finite': s.finite}
        r = rows[key]
        print(f'| ours {s.label} | {"on" if s.jit else "off"} | {s.first_call:.1f} | {m:.3f} | '
              f'{min(s.rounds):.3f} | {r["min_s"]:.3f}-{r["max_s"]:.3f} | {r["steps"]} | {r["img_per_s"]:.1f} | '
              f'{s.gflop:.2f} | {r["gflops"]:.1f} | {r["of_peak"]:.2f} | {r["cpu_util"]:.2f} |')
    for key, p in peers.items():
        if not p.results and not p.errors:
            continue
        if not p.results:
            print(f'| {p.label} | - | - | FAILED | {"; ".join(p.errors)[:200]} | | | | | | | |')
            continue
        hw = p.results[0]['hw']
        gflop = step_gflop(hw, 3)
        m = p.median
        rows[key] = {'label': p.label, 'hw': hw, 'median_s': m, 'min_s': min(p.times),
                     'max_s': max(p.times), 'round_medians_s': p.rounds, 'steps': len(p.times),
                     'img_per_s': TRAINED / m, 'gflops': gflop / m, 'of_peak': gflop / m / peak_gflops,
                     'cpu_util': median(p.util), 'errors': p.errors}
        r = rows[key]
        print(f'| {p.label} | off | - | {m:.3f} | {min(p.rounds):.3f} | {r["min_s"]:.3f}-{r["max_s"]:.3f} | '
              f'{r["steps"]} | {r["img_per_s"]:.1f} | {gflop:.2f} (nominal) | {r["gflops"]:.1f} | '
              f'{r["of_peak"]:.2f} | {r["cpu_util"]:.2f} |')
    for key, l in loops.items():
        s = ours[key]
        print(f'| whole loop Trainer.train() {s.label} | off | - | {l["step_s"]:.3f} | '
              f'{min(c["step_s"] for c in l["chunks"]):.3f} | bare '
              f'{"/".join(f"{b:.3f}" for b in l["bare_s"])} | {l["steps_timed"]} | '
              f'{l["img_per_s"]:.1f} | {s.gflop:.2f} | {s.gflop / l["step_s"]:.1f} | '
              f'{s.gflop / l["step_s"] / peak_gflops:.2f} | {l["cpu_util"]:.2f} |')
    if any(not r.get('finite', True) for r in rows.values()):
        print('note: a repeated fixed-batch step gave a non-finite loss (timing still valid).')

    def per_round(a, b):
        """Median over rounds of a's round median / b's round median."""
        pairs = [x / y for x, y in zip(a, b) if x and y]
        return median(pairs), pairs

    goals = []

    def goal(name, value, target, detail=''):
        if value is None or value != value:
            goals.append((name, '-', f'>= {target}' if target else 'info', 'SKIP' if target else '', detail))
        else:
            result = ('PASS' if value >= target else 'MISS') if target else ''
            goals.append((name, f'{value:.2f}', f'>= {target}' if target else 'info', result, detail))

    for key, target in (('32', GOALS['peak32']), ('8s3', GOALS['peak8'])):
        if key in rows:
            r = rows[key]
            pairs = [r['gflop'] / t / p for t, p in zip(r['round_medians_s'], peak.rounds)]
            goal(f'{r["label"]} step GFLOP/s / GEMM peak (median of per-round ratios)',
                 median(pairs), target, 'per round ' + ', '.join(f'{p:.2f}' for p in pairs) +
                 f'; pooled {r["gflops"]:.1f} / {peak_gflops:.1f} GFLOP/s = {r["of_peak"]:.2f}'
                 f'; vs the fastest GEMM {r["gflops"] / max(peak.samples):.2f}')
    for hw, key, target in ((32, '32', GOALS['usb32']), (8, '8s3', None)):
        name = f'USB step / our step, {hw}x{hw}' + ('' if hw == 32 else ' (scales 3)')
        if f'usb{hw}' in rows and key in rows:
            by_round, pairs = per_round(rows[f'usb{hw}']['round_medians_s'],
                                        rows[key]['round_medians_s'])
            pooled = rows[f'usb{hw}']['median_s'] / rows[key]['median_s']
            goal(name + ' (median of per-round ratios)', by_round, target, 'per round ' +
                 ', '.join(f'{p:.2f}' for p in pairs) + f'; pooled medians {pooled:.2f}')
        elif key in rows:
            goal(name, None, target, peer_note or 'USB run failed')
    if '32fix' in rows and '32' in rows:
        by_round, pairs = per_round(rows['32fix']['round_medians_s'], rows['32']['round_medians_s'])
        goal('FixMatch step / RealMix step time, 32x32 (median of per-round ratios)', by_round,
             None, 'per round ' + ', '.join(f'{p:.2f}' for p in pairs) + f'; FixMatch trains '
             f'{FIXMATCH_TRAINED} images per step (64 + 2 x 448), RealMix {TRAINED} (+128 guesses)')
    for key in ('32', '8s3', '32fix'):
        if key in loops:
            l = loops[key]
            goal(f'whole loop / bare step img/s, {rows[key]["label"]} (median of per-chunk ratios)',
                 l['ratio'], GOALS['loop'], 'per chunk ' + ', '.join(
                     f'{c["ratio"]:.2f}' for c in l['chunks']) + f'; pooled {l["img_per_s"]:.1f} / '
                 f'{l["bare_img_per_s"]:.1f} img/s over {l["steps_timed"]} steps')
    for off, on in (('32', '32xla'), ('8s3', '8s3xla'), ('8', '8xla')):
        if on in xla_off and on in rows:
            by_round, pairs = per_round(xla_off[on], rows[on]['round_medians_s'])
            goal(f'XLA off / on step time, {rows[off]["label"]} (median of per-round ratios)',
                 by_round, None, 'per round ' + ', '.join(f'{p:.2f}' for p in pairs) +
                 f'; {median(xla_off[on]):.3f} s off, {rows[on]["median_s"]:.3f} s on, timed '
                 'after the main rounds (> 1: XLA faster)')

    print()
    print('| goal | measured | target | result | detail |')
    print('|---|---|---|---|---|')
    for g in goals:
        print('| ' + ' | '.join(g) + ' |')
    elapsed = time.perf_counter() - started
    utils = [r['cpu_util'] for r in rows.values() if r.get('cpu_util') == r.get('cpu_util')]
    busy = max(round_loads + [load_start]) > 3 or (utils and min(utils) < 1.6)
    print()
    if busy:
        print('WARNING: other processes competed for the CPUs during this run (load average > 3 '
              'or cpu util < 1.6 on 2 cores): absolute times are inflated and ratios are noisy; '
              'rerun on a quiet machine before trusting PASS/MISS.')
    print(f'load average (1 min): start {load_start}, rounds {round_loads}, end {loadavg()}; '
          f'cpu util = process CPU s / wall s per step (2.00 = both cores busy; lower means other '
          f'processes took CPU time). Total {elapsed / 60:.1f} min.')
    result = {'peak_gflops': peak_gflops, 'peak_samples': peak.samples, 'rows': rows, 'loops': loops,
              'goals': [dict(zip(('name', 'measured', 'target', 'result', 'detail'), g)) for g in goals],
              'rounds': rounds, 'loadavg_rounds': round_loads}
    if FLAGS.json_out:
        with open(FLAGS.json_out, 'w') as f:
            json.dump(result, f, indent=1, default=str)
        print(f'measurements written to {FLAGS.json_out}')


# ----------------------------------------------------------------------------------------------
# --precision_speed and --precision_accuracy: bfloat16 against float32.

PRECISION_GOAL = 1.3  # bfloat16 speed-up at 32x32 on CPUs with bfloat16 units
BF16_FLAGS = ('avx512_bf16', 'amx_bf16', 'amx_tile')


def bf16_units():
    """The CPU's bfloat16 instruction sets, from /proc/cpuinfo ('' if none)."""
    try:
        with open('/proc/cpuinfo') as f:
            line = next((l for l in f if l.startswith('flags')), '')
    except OSError:
        return ''
    return ', '.join(f for f in BF16_FLAGS if f in line.split())


def precision_speed(keys, rounds, steps):
    """Median step time of each configuration in float32 and bfloat16, alternating round by
    round; speed-up = median of the per-round ratios float32 / bfloat16."""
    unknown = [k for k in keys if k not in CONFIGS]
    if unknown:
        raise UserError(f'--configs: unknown {", ".join(unknown)}; valid: {", ".join(CONFIGS)}.')
    work = FLAGS.work_dir or tempfile.mkdtemp(prefix='bench_precision_')
    root = os.path.join(work, 'ml_data')
    os.makedirs(root, exist_ok=True)
    os.environ['ML_DATA'] = root
    load_start, started = loadavg(), time.perf_counter()
    print(f'bench_train --precision_speed: {os.cpu_count()} CPUs: {cpu_model()}; bfloat16 units: '
          f'{bf16_units() or "none"}; {rounds} round(s) of {steps} steps (x4 at 8x8); '
          f'load average {load_start}', flush=True)
    precisions = ('float32', 'bfloat16')
    try:
        conftest, data, steps_of = load_conftest(), {}, {}
        for key in keys:
            for p in precisions:
                s = Step(key, root, os.path.join(work, 'runs'), conftest, data, p)
                steps_of[key, p] = s
                print(f'  built {s.label}: first call {s.first_call:.1f} s', flush=True)
        loads = []
        for r in range(rounds):
            loads.append(loadavg())
            line = []
            for key in keys:
                for p in precisions:
                    s = steps_of[key, p]
                    line.append(f'{key} {p} {s.measure(steps if s.hw == 32 else 4 * steps):.3f}s')
            print(f'  round {r + 1}/{rounds}: load {loads[-1]}, ' + ', '.join(line), flush=True)
    finally:
        if not FLAGS.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print('\n| configuration | float32 s/step | bfloat16 s/step | speed-up (per round) | '
          'cpu util f32/bf16 | CPU s/step f32/bf16 | finite |')
    print('|---|---|---|---|---|---|---|')
    for key in keys:
        a, b = steps_of[key, 'float32'], steps_of[key, 'bfloat16']
        ratios = [x / y for x, y in zip(a.rounds, b.rounds)]
        per_round = ', '.join(f'{x:.2f}' for x in ratios)
        # Under load the two get different shares of the CPUs: CPU seconds per step compare
        # the work itself.
        cpu = [median([t * u for t, u in zip(s.times, s.util)]) for s in (a, b)]
        print(f'| {a.label} | {a.median:.4f} | {b.median:.4f} | {median(ratios):.2f} '
              f'({per_round}) | {median(a.util):.2f}/{median(b.util):.2f} | {cpu[0]:.3f}/'
              f'{cpu[1]:.3f} = {cpu[0] / cpu[1]:.2f} | {a.finite and b.finite} |')
        if key == '32':
            met = median(ratios) >= PRECISION_GOAL
            print(f'Goal: bfloat16 >= {PRECISION_GOAL}x faster at 32x32: '
                  f'{"MET" if met else "NOT MET"} ({median(ratios):.2f}x)')
    print(f'load average (1 min): start {load_start}, rounds {loads}, end {loadavg()}; '
          f'total {(time.perf_counter() - started) / 60:.1f} min')


def precision_accuracy(root, seeds):
    """compare.py's RealMix run on digits@50 (its digits flags) per split seed, in float32 and in
    bfloat16 (alternating); prints test accuracies and the paired differences."""
    from benchmarks import compare
    results = {}
    print(f'bench_train --precision_accuracy: {os.cpu_count()} CPUs: {cpu_model()}; bfloat16 '
          f'units: {bf16_units() or "none"}; load average {loadavg()}', flush=True)
    for seed in seeds:
        for p in ('float32', 'bfloat16'):
            args = compare.parse_args([
                '--methods=realmix', f'--seeds={seed}', f'--train_dir={os.path.join(root, p)}',
                '--shared_args=' + ' '.join(compare.DIGITS_FLAGS + [f'--precision={p}'])])
            env = compare.subprocess_env()
            compare.ensure_splits(args, env, tool='bench_train')
            acc, seconds, fit, _ = compare.train_one('realmix', 'RealMix', 'RealMix', args, seed,
                                                     env)
            results[p, seed] = (acc, seconds, fit)
    print(f'\n== digits@50, RealMix {compare.KIMG} kimg ({" ".join(compare.DIGITS_FLAGS)}), test '
          f'accuracy (%) per split seed; load average now {loadavg()}')
    print('| precision | ' + ' | '.join(f'seed {s}' for s in seeds) + ' | mean ± std | '
          'own labeled images | time |')
    print('|---|' + '---|' * (len(seeds) + 3))
    for p in ('float32', 'bfloat16'):
        accs = [results[p, s][0] for s in seeds]
        print(f'| {p} | ' + ' | '.join(f'{a:.2f}' for a in accs) + f' | {compare.mean_std(accs)} | '
              f'{min(results[p, s][2] for s in seeds):.0f}%+ | '
              f'{compare.duration(sum(results[p, s][1] for s in seeds))} |')
    diffs = [results['bfloat16', s][0] - results['float32', s][0] for s in seeds]
    noise = statistics.stdev([results['float32', s][0] for s in seeds]) if len(seeds) > 1 else 0
    print(f'bfloat16 - float32, paired by seed: {", ".join(f"{d:+.2f}" for d in diffs)} '
          f'(mean {statistics.mean(diffs):+.2f}); float32 seed-to-seed std {noise:.2f}')
    within = abs(statistics.mean(diffs)) <= max(noise, 0.5)
    print(f'Goal: bfloat16 accuracy within noise (|mean paired difference| <= max(float32 std, '
          f'0.5 points)): {"MET" if within else "NOT MET"}')


if __name__ == '__main__':
    run(main)
