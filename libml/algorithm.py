"""The algorithm contract: what a training method gives the trainer, and what it gets back.

To add a method, write one entry point (a short file in `algorithms/`, like `pi_model.py`) with:

    @dataclasses.dataclass
    class Hyper:                      # its flags, each with its default (libml/options.py)
        w: float = option(10.0, 'Weight of the unlabeled loss.')
        def __post_init__(self):      # out-of-range values: one UserError naming the flag,
            check_at_least('w', self.w, 0)   # raised before any data is read

    class MyMethod:
        name = 'MyMethod'             # the run folder's prefix
        nu = 2                        # views of each unlabeled image per step (0: supervised)
        def __init__(self, nclass, hyper): ...; self.args = {...}   # args name the run folder
        def loss(self, batch, step):  # -> (scalar loss, {TensorBoard tag: scalar, ...})

    if __name__ == '__main__':
        train.main(MyMethod, Hyper)   # defines Hyper's flags, reads and checks them, trains

What the trainer gives `loss` (one replica's share of one step):
- `batch`, made by the input pipeline (libml/pipeline.py, outside compiled code):
    'x'      uint8 [B, H, W, C]      the labeled images, augmented with the --augment preset
    'label'  int64 [B]
    'u'      uint8 [nu, U, H, W, C]  nu views of the same U = uratio * B unlabeled images
    'u_label' int64 [U]              only when every unlabeled label is known (-1: out of
                                     distribution, in a class-filtered file); for monitors only
    'draws'  draw(seed, B)           only if the algorithm has `draw`: its random numbers
- `step`, a `Step`: the trained model, the EMA model, the image clock and the run's progress.
  Models are called as `model(images, training=..., update_stats=...)` on float pixel values in
  [0, 255] and return float32 logits [N, K]. In training mode batch norm normalises with the
  moments of the batch it sees; only calls with update_stats=True move its statistics, so a method
  lets one forward batch (normally the labeled one) set them. The EMA model is what is evaluated
  (float32, the trainer updates it after every step); call it only to read predictions, e.g. as
  Mean Teacher's targets: its weights get no gradient.
Everything random must come from `draw` (a function of the step's seed), never from a global
generator: a resumed run then sees exactly the numbers an uninterrupted one would.

What `loss` returns: the scalar loss (a mean over this replica's batch) and summaries, {tag:
scalar} (averaged over each report period and written to TensorBoard), plus, for the collapse
monitors every semi-supervised method gets (libml/summaries.py), any of these per-example entries:
    GUESS         float [U, K]  the target distribution of each unlabeled example (the guessed
                                label, the pseudo-label's probabilities, the teacher's prediction)
    MASK          [U]           1 where an unlabeled example counts in the unlabeled loss ([nu * U]
                                where each view is masked on its own, view-major, as RealMix's)
    LABELED_MASK  [B]           1 where a labeled example counts (training signal annealing)

Optional attributes (defaults in brackets): `uratio` unlabeled images per labeled one [1];
`views` how each of the nu views is augmented, 'weak' (the preset) or 'strong' (the preset,
RandAugment and cutout) [all weak]; `draw(seed, batch)` -> nested dict of tensors [none].

The trainer owns everything else: the optimizer and weight decay, the EMA, the image clock,
checkpoints, TensorBoard, evaluation and the console. Gradients with respect to inputs (VAT) are
taken inside `loss` with a nested tf.GradientTape.
"""
import inspect
import typing

import tensorflow as tf

from libml.utils import UserError


# Per-example entries of the summaries `loss` returns (see the module docstring).
GUESS, MASK, LABELED_MASK = 'guess', 'mask', 'labeled_mask'


class Step(typing.NamedTuple):
    """What the trainer knows about the current step, given to `Algorithm.loss`."""
    model: typing.Any      # the trained model
    ema_model: typing.Any  # the exponential moving average of its weights (the evaluated model)
    nimg: tf.Tensor        # float32 scalar: images trained on before this step (the clock)
    progress: tf.Tensor    # float32 scalar: nimg / the run's total images, in [0, 1]


@typing.runtime_checkable
class Algorithm(typing.Protocol):
    """A training method (see the module docstring for the whole contract)."""
    name: str
    nu: int
    args: dict

    def loss(self, batch: dict, step: Step) -> tuple:
        """-> (scalar float32 loss: a mean over this replica's batch, {summary tag: scalar}
        and optionally GUESS, MASK, LABELED_MASK)"""


VIEWS = ('weak', 'strong')


def check(algorithm):
    """Raises TypeError (one line, naming the class and what is wrong) unless `algorithm` keeps
    the contract; called by the trainer before it builds anything."""
    kind = type(algorithm).__name__

    def fail(what):
        raise TypeError(f'{kind} does not keep the algorithm contract (libml/algorithm.py): '
                        f'{what}.')

    if not isinstance(algorithm, Algorithm):
        missing = [m for m in ('name', 'nu', 'args', 'loss') if not hasattr(algorithm, m)]
        fail(f'it has no {", ".join(missing)}')
    if not isinstance(algorithm.name, str) or not algorithm.name.isidentifier():
        fail(f'name={algorithm.name!r} must be a word (it starts the run folder\'s name)')
    if not isinstance(algorithm.nu, int) or algorithm.nu < 0:
        fail(f'nu={algorithm.nu!r} must be an int >= 0')
    if not isinstance(algorithm.args, dict):
        fail('args must be a dict of its hyper-parameters')
    try:
        inspect.signature(algorithm.loss).bind({}, None)
    except TypeError:
        fail('loss must take (batch, step)')
    uratio = getattr(algorithm, 'uratio', 1)
    if not isinstance(uratio, int) or uratio < 1:
        fail(f'uratio={uratio!r} must be an int >= 1')
    views = getattr(algorithm, 'views', None)
    if views is not None and (len(views) != algorithm.nu or set(views) - set(VIEWS)):
        fail(f'views={views!r} must be {algorithm.nu} of {" or ".join(VIEWS)}')
    if hasattr(algorithm, 'draw') and not callable(algorithm.draw):
        fail('draw must be a function (seed, batch) -> tensors')
    return algorithm


# -- hyper-parameter checks for the Hyper dataclasses: one UserError naming the flag ------------

def check_at_least(flag, value, low):
    if not value >= low:
        raise UserError(f'--{flag}={value} must be >= {low}.')


def check_positive(flag, value):
    if not value > 0:
        raise UserError(f'--{flag}={value} must be > 0.')


def check_fraction(flag, value, open_low=False):
    """value in [0, 1] ((0, 1] with open_low)."""
    if not (0 < value <= 1 if open_low else 0 <= value <= 1):
        raise UserError(f'--{flag}={value} must be in {"(" if open_low else "["}0, 1].')
