#!/usr/bin/env python3
"""Virtual Adversarial Training (Miyato et al., TPAMI 2018, arXiv 1704.03976), with entropy
minimisation: the prediction on an unlabeled image should not change under the small perturbation
that changes it most.

One step (docs/algorithm.md, "VAT"): cross-entropy on the labeled batch, whose
forward pass alone moves the batch-norm statistics; one view u of every unlabeled image, logits
f(u). The most sensitive direction is found by one power iteration from a random direction d
(drawn in the input pipeline): g = grad_d KL(p(u) || p(u + xi d)); r = eps * g / |g| (per image,
in the model's input units: pixels rescaled to [-1, 1], so eps is an L2 norm over all pixels and
channels).
  loss = xe + wu * ramp * mean_u KL(p(u) || p(u + r)) + entmin * mean_u H(p(u)),
  ramp = min(progress / warmup_pos, 1); p(u) is a target (no gradient) in the KL term only.
Settings of the MixMatch paper's comparison, which the RealMix paper's Table 1 reports, except
the probe's size xi: theirs, 1e-6, changes a pixel value by about 2e-6 levels on 32x32x3 images,
below float32's resolution of values above 128 (7.6e-6), so most of the probe rounds away; 1e-3
does not. eps = 6 is for 32x32x3 images (on other sizes keep eps / sqrt(H*W*C)).

  python algorithms/vat.py --dataset=cifar10.3@250-5000 --augment=cifar10
"""
import dataclasses

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)

import tensorflow as tf

from libml import layers, train
from libml.algorithm import GUESS, check_at_least, check_fraction, check_positive
from libml.options import option

PIXELS_PER_UNIT = 127.5   # the model sees x * 2/255 - 1: one input unit is 127.5 pixel levels


@dataclasses.dataclass
class Hyper:
    """VAT's hyper-parameters: each is a flag of vat.py, with its default."""
    wu: float = option(0.3, 'Weight of the virtual adversarial loss.')
    vat_eps: float = option(6.0, 'L2 norm of the adversarial perturbation of an image (input '
                            'units: pixels rescaled to [-1, 1]).')
    vat_xi: float = option(1e-3, 'L2 norm of the probe of the power iteration (input units).')
    entmin: float = option(0.06, 'Weight of the entropy of the unlabeled predictions.')
    warmup_pos: float = option(0.4, 'The adversarial weight ramps up linearly over this fraction '
                               'of the run.')

    def __post_init__(self):
        check_at_least('wu', self.wu, 0)
        check_positive('vat_eps', self.vat_eps)
        check_positive('vat_xi', self.vat_xi)
        check_at_least('entmin', self.entmin, 0)
        check_fraction('warmup_pos', self.warmup_pos)


def unit_directions(d):
    """Each image of d [N, H, W, C] scaled to L2 norm 1 (first by its largest value: the probe's
    gradients are ~xi^2 small, and their squares would underflow)."""
    d /= 1e-12 + tf.reduce_max(tf.abs(d), axis=[1, 2, 3], keepdims=True)
    return d / tf.sqrt(1e-6 + tf.reduce_sum(tf.square(d), axis=[1, 2, 3], keepdims=True))


class VAT:
    name = 'VAT'
    nu = 1   # one view of each unlabeled image

    def __init__(self, nclass, hyper=None, **changes):
        """hyper: the hyper-parameters (default: Hyper()); `changes` replace some of them."""
        self.hyper = dataclasses.replace(hyper or Hyper(), **changes)
        self.args = dataclasses.asdict(self.hyper)

    def draw(self, seed, batch):
        """The seed of the step's random directions (drawn inside the step: their shape is the
        images')."""
        return {'direction_seed': seed}

    def perturbation(self, model, u, logits_u, seed):
        """The virtual adversarial perturbation r of the images u, in pixel units (no gradient)."""
        h = self.hyper
        d = unit_directions(tf.random.stateless_normal(tf.shape(u), seed))
        with tf.GradientTape() as tape:
            tape.watch(d)
            probe = model(u + h.vat_xi * PIXELS_PER_UNIT * d, training=True, update_stats=False)
            distance = tf.reduce_mean(layers.kl_divergence(tf.stop_gradient(logits_u), probe))
        g = tf.stop_gradient(tape.gradient(distance, d))
        return h.vat_eps * PIXELS_PER_UNIT * unit_directions(g)

    def loss(self, batch, step):
        """batch: x uint8 [B,H,W,C], label [B], u uint8 [1,B,H,W,C], draws. -> loss, summaries."""
        h, model = self.hyper, step.model
        u = tf.cast(batch['u'][0], tf.float32)
        logits_x = model(tf.cast(batch['x'], tf.float32), training=True, update_stats=True)
        logits_u = model(u, training=True, update_stats=False)
        r = self.perturbation(model, u, logits_u, batch['draws']['direction_seed'])
        logits_adv = model(u + r, training=True, update_stats=False)
        loss_xe = layers.cross_entropy(batch['label'], logits_x)
        loss_vat = tf.reduce_mean(layers.kl_divergence(tf.stop_gradient(logits_u), logits_adv))
        loss_entmin = tf.reduce_mean(layers.entropy(logits_u))
        loss = (loss_xe + h.wu * layers.ramp_up(step.progress, h.warmup_pos) * loss_vat
                + h.entmin * loss_entmin)
        return loss, {'losses/xe': loss_xe, 'losses/vat': loss_vat, 'losses/entmin': loss_entmin,
                      GUESS: tf.stop_gradient(tf.nn.softmax(logits_u))}


if __name__ == '__main__':
    train.main(VAT, Hyper)
