"""The supervised baselines' losses (fully_supervised/fs_baseline.py and fs_mixup.py): the same
Wide-ResNet and trainer as RealMix, on the labeled images only."""
import tensorflow as tf

from libml import layers
from libml.utils import UserError

SMOOTHING = 0.001  # fs_baseline.py --smoothing
BETA = 0.5         # fs_mixup.py --beta


class Supervised:
    """Cross-entropy on labeled images, with label smoothing."""
    name = 'FSBaseline'
    nu = 0

    def __init__(self, nclass, smoothing=SMOOTHING):
        if not 0 <= smoothing < 1:
            raise UserError(f'--smoothing={smoothing} must be in [0, 1).')
        self.nclass, self.smoothing = nclass, smoothing
        self.args = dict(smoothing=smoothing)

    def targets(self, labels):
        return tf.one_hot(labels, self.nclass) * (1 - self.smoothing) + self.smoothing / self.nclass

    def loss(self, batch, step):
        """batch: x uint8 [B, H, W, C], label int64 [B] -> loss, summaries."""
        logits = step.model(tf.cast(batch['x'], tf.float32), training=True)
        xe = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
            labels=self.targets(batch['label']), logits=logits))
        return xe, {'losses/xe': xe}


class SupervisedMixup:
    """Cross-entropy on labeled images mixed with a permutation of their own batch."""
    name = 'FSMixup'
    nu = 0

    def __init__(self, nclass, beta=BETA):
        if beta <= 0:
            raise UserError(f'--beta={beta} must be > 0.')
        self.nclass, self.beta = nclass, beta
        self.mixmode = layers.MixMode('xx.')
        self.args = dict(beta=beta)

    def draw(self, seed, batch):
        return self.mixmode.draw(seed, batch, 0, self.beta)

    def loss(self, batch, step):
        """batch: x uint8 [B, H, W, C], label int64 [B], draws -> loss, summaries."""
        x, p = layers.mixup(tf.cast(batch['x'], tf.float32), tf.one_hot(batch['label'], self.nclass),
                            batch['draws']['lam'], batch['draws']['perm_x'])
        logits = step.model(x, training=True)
        xe = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=p, logits=logits))
        return xe, {'losses/xe': xe}
