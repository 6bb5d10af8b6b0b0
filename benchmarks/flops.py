#!/usr/bin/env python3
"""FLOPs of one training step and of one forward pass, counted by TensorFlow's profiler.

    python benchmarks/flops.py                     # WRN-28-2, 32x32x3, 10 classes, batch 64, nu 2
    python benchmarks/flops.py --img_size=96 --scales=4 --nclass=10

What is counted (nothing is run, graphs are only traced: about 30 s on 2 CPU cores, half of
it importing TensorFlow):
- forward per image: `model(x, training=False)` of `libml.models.build_model` on one image;
- the training step: the compiled step `libml.train.Trainer` runs (`Trainer._train_step`, the
  same function realmix.py trains with), traced for one batch of the shape realmix.py would
  feed it (labeled [batch, H, W, C], unlabeled [nu, batch, H, W, C], the MixUp draws): label
  guessing (nu forwards of `batch` images, no gradient), the interleaved forward of the
  (1 + nu) mixed batches, their backward, Adam, weight decay and the EMA update. Two settings:
  MixMatch (--tsa=none --percent_mask=-1) and RealMix with TSA and masking
  (--tsa=linear_schedule --percent_mask=0.5);
both by `tf.compat.v1.profiler` with `ProfileOptionBuilder.float_operation()` on the concrete
function's graph. A multiply-add is 2 FLOPs. TensorFlow's registry has FLOP counts for Conv2D,
its two gradients, MatMul and elementwise arithmetic, but none for FusedBatchNorm(Grad) and
LeakyRelu(Grad): those are left out of the totals, and the elements they touch are printed
so their share can be judged. Counted ops whose result nothing reads (the gradient with respect
to the input images: TensorFlow builds it and prunes it before running) are reported apart as
"never run". The conv + dense count is checked against an analytic count (2 x the multiply-adds
of the convolutions and the dense layer, from the kernels' shapes) and, for the step, against
the nominal count: (1 + nu) x batch images forward and backward (backward = 2 x forward, less
the stem's input gradient) plus nu x batch label-guess forwards.

Model and step sizes come from the trainer's and RealMix's own flags, with their defaults:
--batch --nu --filters --repeat --scales --arch --precision (see `python realmix.py --helpfull`);
--img_size (default here 32) and --nclass (default here 10) stand for the data's facts, and
--channels for its channel count.

The printed "time at a given throughput" lines are arithmetic, not measurements: FLOPs divided
by --peak_tflops x --utilisation, times the run's steps (min(train_kimg, epochs*report_kimg)
kimg / batch).
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # realmix.py (the algorithm) lives at the repository root

import libml  # noqa: E402,F401  (first: sets TensorFlow's environment before importing it)

import time  # noqa: E402

from absl import flags, logging  # noqa: E402

import realmix  # noqa: E402
from libml.config import Config  # noqa: E402
from libml.options import define_flags, from_flags  # noqa: E402
from libml.utils import UserError, no_extra_args, run  # noqa: E402

FLAGS = flags.FLAGS
define_flags(realmix.Hyper)  # RealMix's flags: the step measured is RealMix's
flags.DEFINE_integer('channels', 3, 'Image channels of the counted model.')
flags.DEFINE_list('peak_tflops', ['19.5', '156', '312'], 'Peak TFLOP/s for the time estimates '
                  '(default: an NVIDIA A100\'s dense FP32, TF32 and BF16 peaks).')
flags.DEFINE_list('utilisation', ['0.3', '0.4'], 'Fractions of the peak assumed reached, for '
                  'the time estimates.')

DEFAULT_SIZE, DEFAULT_NCLASS = 32, 10
# (label, RealMix hyper-parameters that differ between the two counted steps)
VARIANTS = (('MixMatch (--tsa=none --percent_mask=-1)', dict(tsa='none', percent_mask=-1.0)),
            ('RealMix (--tsa=linear_schedule --percent_mask=0.5)',
             dict(tsa='linear_schedule', percent_mask=0.5)))
MODEL_OPS = ('Conv2D', 'Conv2DBackpropInput', 'Conv2DBackpropFilter', 'MatMul')
UNCOUNTED = ('FusedBatchNormV3', 'FusedBatchNormGradV3', 'LeakyRelu', 'LeakyReluGrad')


def profile(graph):
    """{op type: FLOPs} of `graph` by tf.compat.v1.profiler (ops it has no count for are absent)."""
    import tensorflow as tf
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # the profiler's TF1 helpers warn that they are TF1's
    try:
        root = tf.compat.v1.profiler.profile(graph=graph, cmd='op', options=options)
    finally:
        logging.set_verbosity(verbosity)
    out = {}

    def walk(node):  # the 'op' view nests each op type under the previous one
        for child in node.children:
            out[child.name] = out.get(child.name, 0) + child.float_ops
            walk(child)
    walk(root)
    if sum(out.values()) != root.total_float_ops:
        raise RuntimeError(f'profiler: op types sum to {sum(out.values())}, total is '
                           f'{root.total_float_ops}')
    return out


def unused_flops(graph):
    """{op type: FLOPs} of the counted ops whose results nothing reads. The gradient of a
    convolution builds both its input and its kernel gradient; the stem's input gradient (the
    gradient of the images) has no reader, and TensorFlow prunes such ops before running a
    function, so they are counted by the profiler but never computed."""
    from tensorflow.python.framework import ops as tf_ops  # the registry the profiler reads
    outputs = {id(t) for t in graph.outputs}
    out = {}
    for op in graph.get_operations():
        if op.type not in MODEL_OPS or any(t.consumers() or id(t) in outputs for t in op.outputs):
            continue
        flops = tf_ops.get_stats_for_node_def(graph, op.node_def, 'flops').value or 0
        out[op.type] = out.get(op.type, 0) + flops
    return out


def uncounted_elements(graph):
    """{op type: elements of its first output} for the ops of UNCOUNTED in `graph`."""
    out = {}
    for op in graph.get_operations():
        if op.type in UNCOUNTED:
            out[op.type] = out.get(op.type, 0) + op.outputs[0].shape.num_elements()
    return out


def analytic_forward(model, size):
    """2 x multiply-adds of the convolutions and the dense layer of one image, from the kernels'
    shapes and the strides: stem and first stage at `size`, each later stage halves it."""
    side, flops = size, 2 * size * size * model.stem.shape.num_elements()
    for block in model.blocks:
        side = -(-side // block.stride)  # SAME padding: ceil(side / stride)
        for kernel in block.kernels:
            flops += 2 * side * side * kernel.shape.num_elements()
    return flops + 2 * model.dense_kernel.shape.num_elements()


def step_graph(config, hyper, size, nclass, channels, changes):
    """The trainer's compiled step for RealMix with `changes`, traced for one batch."""
    import tensorflow as tf
    from libml import datasets, train
    algorithm = realmix.RealMix(nclass, config.train_kimg, hyper, **changes)
    dataset = datasets.Dataset(name='flops', labeled=None, unlabeled=None, valid=None, test=None,
                               height=size, width=size, channels=channels, nclass=nclass,
                               class_names=None)
    trainer = train.Trainer(algorithm, dataset, config)
    b, shape = config.batch, (size, size, channels)
    draws = algorithm.draw(tf.constant([0, 0], tf.int64), b)
    spec = {'x': tf.TensorSpec((b,) + shape, tf.uint8), 'label': tf.TensorSpec([b], tf.int64),
            'u': tf.TensorSpec((algorithm.nu, b) + shape, tf.uint8),
            'draws': tf.nest.map_structure(tf.TensorSpec.from_tensor, draws)}
    # The trainer's own step function (what Trainer.train() calls every step), traced, not run.
    return trainer._train_step.get_concrete_function(spec, tf.TensorSpec([], tf.float32)).graph


def main(argv):
    no_extra_args(argv)
    import tensorflow as tf
    from libml import models
    config = from_flags(Config)
    config.check()
    hyper = from_flags(realmix.Hyper)
    size = FLAGS.img_size or DEFAULT_SIZE
    nclass = FLAGS.nclass or DEFAULT_NCLASS
    channels = FLAGS.channels
    if size < 8 or nclass < 2 or channels < 1:
        raise UserError('--img_size must be >= 8, --nclass >= 2, --channels >= 1.')
    try:
        peaks = [float(p) for p in FLAGS.peak_tflops]
        utils = [float(u) for u in FLAGS.utilisation]
    except ValueError:
        raise UserError('--peak_tflops and --utilisation take comma-separated numbers.') from None
    scales = config.scales or models.default_scales(size)
    b, nu = config.batch, hyper.nu
    start = time.perf_counter()

    model = models.build_model(config.arch, nclass, channels, config.filters, config.repeat,
                               scales, compute_dtype=config.precision)
    forward = tf.function(lambda x: model(x, training=False), autograph=False)
    image = tf.TensorSpec([1, size, size, channels], tf.float32)
    graph = forward.get_concrete_function(image).graph
    fwd = profile(graph)
    fwd_model = sum(fwd.get(k, 0) for k in MODEL_OPS)
    analytic = analytic_forward(model, size)
    stem = 2 * size * size * model.stem.shape.num_elements()

    print(f'Wide-ResNet (filters {config.filters}, repeat {config.repeat}, scales {scales}), '
          f'{size}x{size}x{channels}, {nclass} classes, {config.precision}, '
          f'{sum(v.shape.num_elements() for v in model.trainable_variables):,} parameters; '
          f'batch {b}, nu {nu}')
    print(f'TensorFlow {tf.__version__}, tf.compat.v1.profiler float_operation() on the traced '
          'graphs')
    print()
    print('Forward pass, one image (model(x, training=False)):')
    print(f'  profiler, conv + dense (Conv2D, MatMul)   {fwd_model / 1e9:.4f} GFLOP')
    print(f'  profiler, every counted op                {sum(fwd.values()) / 1e9:.4f} GFLOP '
          f'(+ {", ".join(k for k in sorted(fwd) if k not in MODEL_OPS)})')
    print(f'  analytic, 2 x conv and dense multiply-adds {analytic / 1e9:.4f} GFLOP: '
          f'{"equal to" if analytic == fwd_model else "DIFFERENT from"} the profiler\'s')
    print()

    trained, guessed = b * (1 + nu), b * nu
    nominal = trained * (3 * analytic - stem) + guessed * analytic
    print(f'Training step: {guessed} label-guess forwards (no gradient), {trained} images '
          f'forward + backward in {1 + nu} batches of {b}, Adam, weight decay, EMA')
    print(f'  nominal: {trained} x (forward + backward = 2 x forward, less the stem\'s input '
          f'gradient) + {guessed} x forward = {nominal / 1e9:.2f} GFLOP')
    header = ['step', 'profiler total', 'never run', 'run', 'Conv2D', 'Conv2DBackpropInput',
              'Conv2DBackpropFilter', 'MatMul', 'other counted', 'conv+dense run / nominal']
    print('GFLOP per step ("never run": results nothing reads, pruned by TensorFlow before '
          'running; "run" = total - never run):')
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    step_flops = {}
    uncounted = {}
    for label, changes in VARIANTS:
        graph = step_graph(config, hyper, size, nclass, channels, changes)
        ops, unused = profile(graph), unused_flops(graph)
        ran = {k: v - unused.get(k, 0) for k, v in ops.items()}
        model_part = sum(ran.get(k, 0) for k in MODEL_OPS)
        total, never = sum(ops.values()), sum(unused.values())
        step_flops[label] = total - never
        uncounted = uncounted_elements(graph)
        cells = [label, f'{total / 1e9:.2f}', f'{never / 1e9:.2f}', f'{(total - never) / 1e9:.2f}']
        cells += [f'{ran.get(k, 0) / 1e9:.2f}' for k in MODEL_OPS]
        cells += [f'{(total - never - model_part) / 1e9:.3f}', f'{model_part / nominal:.4f}']
        print('| ' + ' | '.join(cells) + ' |')
    print('  not counted (no FLOP count in TensorFlow\'s registry), elements of their outputs: '
          + ', '.join(f'{k} {v / 1e9:.3f} G' for k, v in sorted(uncounted.items())))
    print()

    steps = config.total_nimg // b
    print(f'A run ({config.total_nimg >> 10} kimg = {steps:,} steps of {b} labeled images): '
          f'{steps * max(step_flops.values()) / 1e18:.3f} EFLOP of training steps')
    print('Time at a given throughput (ESTIMATES: FLOPs / (peak x utilisation), not measured):')
    for peak in peaks:
        for u in utils:
            sec = max(step_flops.values()) / (peak * 1e12 * u)
            print(f'  {peak:g} TFLOP/s x {u:g}: {sec * 1e3:.2f} ms per step, '
                  f'{sec * steps / 3600:.1f} h per run')
    print(f'({time.perf_counter() - start:.1f} s)')


if __name__ == '__main__':
    run(main)
