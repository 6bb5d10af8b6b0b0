"""Optimizers of the trainer, as tf.Modules whose state exists before a checkpoint is restored.

Hand-written rather than Keras': a Keras optimizer creates its slots lazily at the first update
and keys them by position, so restoring a run needs them built first; and RealMix's decoupled
weight decay (kernels only, after the step) is the trainer's, not the optimizer's.
"""
import tensorflow as tf


class Adam(tf.Module):
    """Adam (epsilon 1e-8) whose state is created up front, in the order of `variables`.

    `updates` counts the updates applied (the EMA warm-up and debiasing read it).
    """

    def __init__(self, variables, lr, beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__(name='adam')
        self.lr, self.beta1, self.beta2, self.epsilon = lr, beta1, beta2, epsilon
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name='updates')
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name='m') for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name='v') for v in variables]

    def apply(self, grads, variables):
        self.updates.assign_add(1)
        t = tf.cast(self.updates, tf.float32)
        lr = self.lr * tf.sqrt(1 - self.beta2 ** t) / (1 - self.beta1 ** t)
        for g, var, m, v in zip(grads, variables, self.m, self.v):
            m.assign(self.beta1 * m + (1 - self.beta1) * g)
            v.assign(self.beta2 * v + (1 - self.beta2) * tf.square(g))
            var.assign_sub(lr * m / (tf.sqrt(v) + self.epsilon))
