"""Optimizers of the trainer (--optimizer), and the learning-rate schedule (--lr_schedule), as
tf.Modules whose state exists before a checkpoint is restored.

Hand-written rather than Keras': a Keras optimizer creates its slots lazily at the first update
and keys them by position, so restoring a run needs them built first; and RealMix's decoupled
weight decay (kernels only, after the step) is the trainer's, not the optimizer's.
"""
import math

import tensorflow as tf


class Adam(tf.Module):
    """Adam (epsilon 1e-8) whose state is created up front, in the order of `variables`.

    `updates` counts the updates applied (the EMA warm-up and debiasing read it).
    """

    def __init__(self, variables, beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__(name='adam')
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name='updates')
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name='m') for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name='v') for v in variables]

    def apply(self, grads, variables, lr):
        self.updates.assign_add(1)
        t = tf.cast(self.updates, tf.float32)
        lr = lr * tf.sqrt(1 - self.beta2 ** t) / (1 - self.beta1 ** t)
        for g, var, m, v in zip(grads, variables, self.m, self.v):
            m.assign(self.beta1 * m + (1 - self.beta1) * g)
            v.assign(self.beta2 * v + (1 - self.beta2) * tf.square(g))
            var.assign_sub(lr * m / (tf.sqrt(v) + self.epsilon))


class SGD(tf.Module):
    """SGD with (Nesterov) momentum, state created up front, in the order of `variables`.

    v <- momentum * v + g; w <- w - lr * (g + momentum * v) with Nesterov, else w - lr * v
    (as tf.keras.optimizers.SGD and torch.optim.SGD compute it).
    """

    def __init__(self, variables, momentum=0.9, nesterov=True):
        super().__init__(name='sgd')
        self.momentum, self.nesterov = momentum, nesterov
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name='updates')
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name='v') for v in variables]

    def apply(self, grads, variables, lr):
        self.updates.assign_add(1)
        for g, var, v in zip(grads, variables, self.v):
            v.assign(self.momentum * v + g)
            var.assign_sub(lr * (g + self.momentum * v if self.nesterov else v))


def build(name, variables, momentum=0.9, nesterov=True):
    """The optimizer `name` ('adam' or 'sgd') for `variables`."""
    if name == 'sgd':
        return SGD(variables, momentum, nesterov)
    return Adam(variables)


def learning_rate(lr, schedule, updates, total_updates):
    """The learning rate after `updates` of `total_updates` (float32 scalar tensors allowed).

    constant: lr. cosine: lr * cos(7*pi*t / (16*T)) with t = updates, T = total_updates (FixMatch's
    decay, which ends at about 0.2 lr rather than 0).
    """
    if schedule == 'constant':
        return tf.constant(lr, tf.float32)
    t = tf.cast(updates, tf.float32) / float(max(total_updates, 1))
    return lr * tf.cos(7 * math.pi * tf.minimum(t, 1.0) / 16)


class LossScale(tf.Module):
    """Dynamic loss scaling (--precision=float16): float16 gradients of small values underflow to
    0, so the loss is multiplied by `scale` before the backward pass and the gradients divided by
    it after. A step whose gradients are not all finite is skipped and halves the scale;
    `growth_steps` finite steps in a row double it. Its state is checkpointed (exact resume).
    """

    def __init__(self, initial=2.0 ** 15, growth_steps=2000):
        super().__init__(name='loss_scale')
        self.growth_steps = int(growth_steps)
        self.scale = tf.Variable(float(initial), dtype=tf.float32, trainable=False, name='scale')
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name='good_steps')

    def update(self, finite):
        """After a step whose gradients were all finite (`finite`, a bool tensor) or not."""
        good = tf.where(finite, self.good_steps + 1, 0)
        grow = good >= self.growth_steps
        self.scale.assign(self.scale * tf.where(grow, 2.0, tf.where(finite, 1.0, 0.5)))
        self.good_steps.assign(tf.where(grow, tf.constant(0, tf.int64), good))


# FixMatch's paper's optimizer (Sohn et al. 2020), also UDA's (Xie et al. 2019): the values of
# the trainer's flags that fixmatch.py and algorithms/uda.py use as their defaults.
SGD_COSINE = dict(optimizer='sgd', momentum=0.9, lr=0.03, lr_schedule='cosine', wd=5e-4)
