#!/usr/bin/env python3
"""RealMix (Nair, Fuentes Alonso, Beltramelli, 2019): MixMatch with TSA and out-of-distribution masking.

One step (docs/algorithm.md, "One training step"): guess the unlabeled batch's labels from `nu`
augmented views (mean softmax, sharpened with T); MixUp labeled and unlabeled examples
(--mixmode); interleave so every forward batch holds both kinds (batch-norm statistics from the
first batch only); loss = cross-entropy on labeled (TSA may drop examples the model already
fits) + w_match * warmup * squared error on unlabeled (the least confident fraction
--percent_mask may be dropped).

  python realmix.py --dataset=cifar10.3@250-5000 --augment=cifar10 --tsa=linear_schedule
"""
import dataclasses

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)

import tensorflow as tf
from absl import flags

from libml import layers, train
from libml.algorithm import GUESS, LABELED_MASK, MASK
from libml.options import changed, option
from libml.utils import UserError

FLAGS = flags.FLAGS


@dataclasses.dataclass
class Hyper:
    """RealMix's hyper-parameters: each is a flag of realmix.py, with its default."""
    w_match: float = option(75.0, 'Weight of the unlabeled (L2) loss.')
    beta: float = option(0.75, 'MixUp Beta(beta, beta) parameter.')
    nu: int = option(2, 'Augmented views of each unlabeled image.')
    T: float = option(0.5, 'Sharpening temperature of the guessed labels.')
    warmup_kimg: int = option(1024, 'The unlabeled loss weight ramps up over this many kimg.')
    mixmode: str = option('xxy.yxy', 'What labeled (left of ".") and unlabeled (right) examples '
                          'are mixed with: ' + ' '.join(layers.MixMode.MODES))
    tsa: str = option('none', 'Training signal annealing: ' + ', '.join(layers.TSA_SCHEDULES))
    percent_mask: float = option(-1.0, 'Drop this fraction (0 < p < 1) of the least confident '
                                 'unlabeled examples from the unlabeled loss; -1 = off.')


# The original hard-coded these: they name the run only when changed, so its run folders stay.
NAMED_WHEN_CHANGED = ('T', 'warmup_kimg', 'mixmode')


class RealMix:
    name = 'RealMix'

    def __init__(self, nclass, train_kimg, hyper=None, **changes):
        """hyper: the hyper-parameters (default: Hyper()); `changes` replace some of them."""
        h = dataclasses.replace(hyper or Hyper(), **changes)
        if h.beta <= 0:
            raise UserError(f'--beta={h.beta} must be > 0.')
        if h.nu < 1:
            raise UserError(f'--nu={h.nu} must be at least 1.')
        if h.T <= 0:
            raise UserError(f'--T={h.T} must be > 0.')
        if h.warmup_kimg < 0 or h.w_match < 0:
            raise UserError('--warmup_kimg and --w_match must be >= 0.')
        if h.percent_mask != -1 and not 0 < h.percent_mask < 1:
            raise UserError(f'--percent_mask={h.percent_mask} must be in (0, 1), or -1 for off.')
        layers.tsa_threshold(h.tsa, 0.0, nclass)  # rejects an unknown schedule
        self.mixmode = layers.MixMode(h.mixmode)
        self.nclass, self.train_kimg = nclass, train_kimg
        self.w_match, self.beta, self.nu, self.T = h.w_match, h.beta, h.nu, h.T
        self.warmup_kimg, self.tsa, self.percent_mask = h.warmup_kimg, h.tsa, h.percent_mask
        self.args = dict(w_match=h.w_match, beta=h.beta, nu=h.nu, tsa=h.tsa,
                         percent_mask=h.percent_mask)
        self.args.update({k: v for k, v in changed(h).items() if k in NAMED_WHEN_CHANGED})

    def draw(self, seed, batch):
        """MixUp draws of one step (made in the input pipeline, outside compiled code)."""
        return self.mixmode.draw(seed, batch, self.nu, self.beta)

    def loss(self, batch, step):
        """batch: x uint8 [B,H,W,C], label [B], u uint8 [nu,B,H,W,C], draws. -> loss, summaries."""
        model, nimg = step.model, step.nimg
        x = tf.cast(batch['x'], tf.float32)
        u = tf.cast(batch['u'], tf.float32)
        b = x.shape[0]
        views = [u[i] for i in range(self.nu)]
        # Guessing must not move the batch-norm statistics: only the first training batch does.
        guess = layers.guess_label([model(v, training=True, update_stats=False) for v in views],
                                   self.T)
        targets = [tf.one_hot(batch['label'], self.nclass)] + [guess] * self.nu
        xs, ps = self.mixmode([x] + views, targets, batch['draws'])
        mixed = layers.interleave(xs, b)
        logits = [model(mixed[0], training=True, update_stats=True)]
        logits += [model(m, training=True, update_stats=False) for m in mixed[1:]]
        logits = layers.interleave(logits, b)
        logits_x, logits_u = logits[0], tf.concat(logits[1:], 0)
        p_x, p_u = ps[0], tf.concat(ps[1:], 0)

        xe = tf.nn.softmax_cross_entropy_with_logits(labels=p_x, logits=logits_x)
        progress = tf.clip_by_value(nimg / (self.train_kimg * 1024.0), 0.0, 1.0)
        if self.tsa == 'none':
            tsa_keep = tf.ones_like(xe)
        else:
            eta = layers.tsa_threshold(self.tsa, progress, self.nclass)
            tsa_keep = layers.tsa_mask(tf.nn.softmax(logits_x), p_x, eta)
        loss_xe = layers.masked_mean(xe, tsa_keep)

        probs_u = tf.nn.softmax(logits_u)
        keep = layers.confidence_mask(probs_u, self.percent_mask)
        squared = tf.reduce_mean(tf.square(p_u - probs_u), axis=1)   # mean over classes
        loss_l2u = layers.masked_mean(squared, keep)
        warmup = tf.clip_by_value(nimg / (max(self.warmup_kimg, 1e-9) * 1024.0), 0.0, 1.0)
        loss = loss_xe + self.w_match * warmup * loss_l2u

        confidence = tf.reduce_max(probs_u, axis=1)
        stats = {'losses/xe': loss_xe, 'losses/l2u': loss_l2u, 'losses/overall': loss,
                 'losses/min_unsup_prob': tf.reduce_min(confidence),
                 'losses/mean_unsup_prob': tf.reduce_mean(confidence),
                 'losses/max_unsup_prob': tf.reduce_max(confidence), GUESS: guess}
        if self.tsa != 'none':
            stats['losses/tsa_kept'] = tf.reduce_mean(tsa_keep)
            stats[LABELED_MASK] = tsa_keep
        if self.percent_mask > 0:
            stats[MASK] = keep
            # UDA's name for the kept fraction; and the confidence below which examples dropped.
            stats['losses/high_prob_ratio'] = tf.reduce_mean(keep)
            stats['losses/percent_confidence_mask'] = tf.reduce_min(
                tf.where(keep > 0, confidence, tf.ones_like(confidence)))
        return loss, stats


if __name__ == '__main__':
    train.main(lambda nclass, hyper: RealMix(nclass, FLAGS.train_kimg, hyper), Hyper)
