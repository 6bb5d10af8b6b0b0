#!/usr/bin/env python3
"""Pi-Model (Laine & Aila, ICLR 2017, arXiv 1610.02242): two augmented views of an unlabeled
image should get the same prediction.

One step (docs/algorithm.md, "Pi-Model"): cross-entropy on the labeled batch, whose
forward pass alone moves the batch-norm statistics; every unlabeled image is seen in two views,
and the first view's softmax (a target: no gradient) is compared with the second's:
  loss = xe + wu * ramp * mean_u mean_K (softmax f(u1) - softmax f(u2))^2,
  ramp = min(progress / warmup_pos, 1).
Settings of the MixMatch paper's comparison, which the RealMix paper's Table 1 reports.

  python algorithms/pi_model.py --dataset=cifar10.3@250-5000 --augment=cifar10
"""
import dataclasses

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)

import tensorflow as tf

from libml import layers, train
from libml.algorithm import GUESS, check_at_least, check_fraction
from libml.options import option


@dataclasses.dataclass
class Hyper:
    """Pi-Model's hyper-parameters: each is a flag of pi_model.py, with its default."""
    wu: float = option(10.0, 'Weight of the consistency loss.')
    warmup_pos: float = option(0.4, 'The consistency weight ramps up linearly over this '
                               'fraction of the run.')

    def __post_init__(self):
        check_at_least('wu', self.wu, 0)
        check_fraction('warmup_pos', self.warmup_pos)


class PiModel:
    name = 'PiModel'
    nu = 2   # two views of each unlabeled image

    def __init__(self, nclass, hyper=None, **changes):
        """hyper: the hyper-parameters (default: Hyper()); `changes` replace some of them."""
        self.hyper = dataclasses.replace(hyper or Hyper(), **changes)
        self.args = dataclasses.asdict(self.hyper)

    tag = 'losses/pm'

    def teacher(self, step):
        """The model whose prediction on the first view is the target: the trained one itself."""
        return step.model

    def loss(self, batch, step):
        """batch: x uint8 [B,H,W,C], label [B], u uint8 [2,B,H,W,C]. -> loss, summaries."""
        h, model = self.hyper, step.model
        u = tf.cast(batch['u'], tf.float32)
        logits_x = model(tf.cast(batch['x'], tf.float32), training=True, update_stats=True)
        # In training mode, as the second view: batch norm uses this batch's moments.
        target = tf.stop_gradient(self.teacher(step)(u[0], training=True, update_stats=False))
        logits_u = model(u[1], training=True, update_stats=False)
        loss_xe = layers.cross_entropy(batch['label'], logits_x)
        loss_u = tf.reduce_mean(layers.softmax_squared_error(target, logits_u))
        loss = loss_xe + h.wu * layers.ramp_up(step.progress, h.warmup_pos) * loss_u
        return loss, {'losses/xe': loss_xe, self.tag: loss_u, GUESS: tf.nn.softmax(target)}


if __name__ == '__main__':
    train.main(PiModel, Hyper)
