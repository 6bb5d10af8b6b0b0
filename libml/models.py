"""The Wide-ResNet of MixMatch (which RealMix trains), as a `tf.Module` with explicit variables.

Written with `tf.nn` ops rather than Keras layers so that the trainer controls the batch-norm
statistics (MixMatch keeps the update of the first interleaved batch only) and so that batch
norm runs as one fused kernel (`FusedBatchNormV3`, which also folds in the moving-average update).

Conventions: images NHWC float32 with pixel values in [0, 255]; logits float32 [B, nclass].
Nothing here assumes a CPU: the same code runs on GPUs (cuDNN fused batch norm, NHWC).

Mixed precision (`compute_dtype` bfloat16 or float16, --precision): the variables, the batch-norm
statistics and the logits stay float32; convolutions, batch norm, activations and the dense layer
compute in `compute_dtype`, on the weights cast at the point of use (the gradient of a cast is a
cast back, so the gradients reach the float32 variables as float32).
"""
import tensorflow as tf

from libml.utils import UserError

ARCHS = ('resnet',)
BN_EPSILON = 1e-3
LEAKY_SLOPE = 0.1
STEM_FILTERS = 16


def default_scales(img_size):
    """Number of resolution stages for square images of `img_size` pixels: ilog2(size) - 2, >= 1.

    8 -> 1, 32 -> 3, 96 -> 4 (the final feature map is then 2x2 to 8x8 pixels).
    """
    return max(int(img_size).bit_length() - 1 - 2, 1)


def _leaky_relu(x):
    return tf.nn.leaky_relu(x, alpha=LEAKY_SLOPE)


class _KernelInit:
    """Deterministic initial values: the i-th kernel made gets the stateless seed [seed, i]."""

    def __init__(self, seed):
        self.seed = int(seed)
        self.count = 0

    def _next_seed(self):
        self.count += 1
        return tf.constant([self.seed, self.count], tf.int64)

    def conv(self, k, cin, cout):
        """[k, k, cin, cout] ~ N(0, std = (0.5*k*k*cout)^-1/2), MixMatch's (He-style) conv init."""
        std = (0.5 * k * k * cout) ** -0.5
        return tf.random.stateless_normal([k, k, cin, cout], self._next_seed(), stddev=std)

    def dense(self, cin, cout):
        """[cin, cout] Glorot normal (truncated at 2 std, rescaled to keep the variance)."""
        std = (2.0 / (cin + cout)) ** 0.5 / 0.87962566103423978
        return tf.random.stateless_truncated_normal([cin, cout], self._next_seed(), stddev=std)


class BatchNorm(tf.Module):
    """Batch normalisation over N, H, W of NHWC tensors [B, H, W, C] -> [B, H, W, C].

    Variables (in this order): gamma (ones), beta (zeros), trainable; moving_mean (zeros),
    moving_variance (ones), non-trainable, synchronised on read with MEAN aggregation (as Keras
    does) so replicas may assign them inside `strategy.run`.
    Training mode normalises with the batch's (biased) moments and, when `update_stats`, sets
    moving = momentum*moving + (1-momentum)*batch, where the batch variance is the unbiased one
    (n/(n-1) correction, what the fused kernel and TF1's fused batch norm report).
    """

    def __init__(self, channels, momentum, sync=False, name='bn'):
        super().__init__(name=name)
        self.momentum = float(momentum)
        self.sync = bool(sync)
        on_read = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                       aggregation=tf.VariableAggregation.MEAN)
        with self.name_scope:
            self.gamma = tf.Variable(tf.ones([channels]), name='gamma')
            self.beta = tf.Variable(tf.zeros([channels]), name='beta')
            self.moving_mean = tf.Variable(tf.zeros([channels]), name='moving_mean', **on_read)
            self.moving_variance = tf.Variable(tf.ones([channels]), name='moving_variance', **on_read)

    def ordered_variables(self):
        return [self.gamma, self.beta, self.moving_mean, self.moving_variance]

    def __call__(self, x, training, update_stats=True):
        """x: float32, bfloat16 or float16 (the output's type); the variables stay float32.

        update_stats: True (moving = momentum*moving + (1-momentum)*batch), False (unchanged),
        or a float scalar tensor f: moving += f * (batch - moving), which with f = b/(n+b) keeps
        the running mean over images of the batch statistics (`recompute_batch_norm`)."""
        if not training:
            return tf.raw_ops.FusedBatchNormV3(
                x=x, scale=self.gamma, offset=self.beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=BN_EPSILON, data_format='NHWC', is_training=False)[0]
        replica = tf.distribute.get_replica_context()
        if self.sync and replica is not None and replica.num_replicas_in_sync > 1:
            return self._cross_replica(x, replica, update_stats)
        if update_stats is False:
            empty = tf.constant([], tf.float32)
            return tf.raw_ops.FusedBatchNormV3(
                x=x, scale=self.gamma, offset=self.beta, mean=empty, variance=empty,
                epsilon=BN_EPSILON, data_format='NHWC', is_training=True)[0]
        if update_stats is True:
            # The kernel computes the moving averages itself: outputs 1 and 2 are
            # (1-f)*moving + f*batch with f = exponential_avg_factor (an attribute, not a tensor).
            y, mean, variance = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=self.gamma, offset=self.beta, mean=self.moving_mean,
                variance=self.moving_variance, epsilon=BN_EPSILON,
                exponential_avg_factor=1.0 - self.momentum, data_format='NHWC', is_training=True)[:3]
            self.moving_mean.assign(mean)
            self.moving_variance.assign(variance)
            return y
        # A factor given as a tensor: with exponential_avg_factor=1 the kernel returns the batch's
        # own mean and (unbiased) variance, blended here so one trace serves every factor.
        empty = tf.constant([], tf.float32)
        y, mean, variance = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=self.gamma, offset=self.beta, mean=empty, variance=empty,
            epsilon=BN_EPSILON, exponential_avg_factor=1.0, data_format='NHWC', is_training=True)[:3]
        f = tf.cast(update_stats, tf.float32)
        self.moving_mean.assign_add(f * (mean - self.moving_mean))
        self.moving_variance.assign_add(f * (variance - self.moving_variance))
        return y

    def _cross_replica(self, x, replica, update_stats):
        """Training-mode batch norm with moments over the batches of all replicas (one all-reduce)."""
        dtype, x = x.dtype, tf.cast(x, tf.float32)  # moments of 16-bit activations: in float32
        local = tf.stack([tf.reduce_sum(x, [0, 1, 2]), tf.reduce_sum(tf.square(x), [0, 1, 2]),
                          tf.fill(tf.shape(self.gamma), tf.cast(tf.reduce_prod(tf.shape(x)[:3]), x.dtype))])
        total = replica.all_reduce(tf.distribute.ReduceOp.SUM, local)
        count = total[2]
        mean = total[0] / count
        variance = tf.maximum(total[1] / count - tf.square(mean), 0.0)
        y = tf.nn.batch_normalization(x, mean, variance, self.beta, self.gamma, BN_EPSILON)
        if update_stats is not False:
            unbiased = variance * count / tf.maximum(count - 1, 1)
            f = 1.0 - self.momentum if update_stats is True else tf.cast(update_stats, tf.float32)
            self.moving_mean.assign(self.moving_mean * (1 - f) + tf.stop_gradient(mean) * f)
            self.moving_variance.assign(self.moving_variance * (1 - f) + tf.stop_gradient(unbiased) * f)
        return tf.cast(y, dtype)


class ResidualBlock(tf.Module):
    """Pre-activation residual block [B, H, W, cin] -> [B, H/stride, W/stride, cout].

    BN -> leaky ReLU -> conv3x3(stride) -> BN -> leaky ReLU -> conv3x3, plus the shortcut: the
    input (or, with `activate_before_residual`, the first BN + leaky ReLU output), through a 1x1
    conv with the stride when cin != cout.
    """

    def __init__(self, cin, cout, stride, activate_before_residual, init, momentum, sync, name):
        super().__init__(name=name)
        self.stride = stride
        self.activate_before_residual = activate_before_residual
        with self.name_scope:
            self.bn1 = BatchNorm(cin, momentum, sync, name='bn1')
            self.conv1 = tf.Variable(init.conv(3, cin, cout), name='conv1/kernel')
            self.bn2 = BatchNorm(cout, momentum, sync, name='bn2')
            self.conv2 = tf.Variable(init.conv(3, cout, cout), name='conv2/kernel')
            self.shortcut = (tf.Variable(init.conv(1, cin, cout), name='shortcut/kernel')
                             if cin != cout else None)

    @property
    def kernels(self):
        return [self.conv1, self.conv2] + ([self.shortcut] if self.shortcut is not None else [])

    def ordered_variables(self):
        out = self.bn1.ordered_variables() + [self.conv1] + self.bn2.ordered_variables() + [self.conv2]
        return out + ([self.shortcut] if self.shortcut is not None else [])

    def __call__(self, x, training, update_stats):
        y = _leaky_relu(self.bn1(x, training, update_stats))
        if self.activate_before_residual:
            x = y
        y = tf.nn.conv2d(y, tf.cast(self.conv1, y.dtype), self.stride, 'SAME')
        y = _leaky_relu(self.bn2(y, training, update_stats))
        y = tf.nn.conv2d(y, tf.cast(self.conv2, y.dtype), 1, 'SAME')
        if self.shortcut is not None:
            x = tf.nn.conv2d(x, tf.cast(self.shortcut, x.dtype), self.stride, 'SAME')
        return x + y


class WideResNet(tf.Module):
    """MixMatch's Wide-ResNet (WRN-28-2 with the defaults): images [B, H, W, C] -> logits [B, nclass].

    Layout: x*2/255 - 1; 3x3 stem conv with 16 filters; for s in range(scales), `repeat`
    residual blocks of `filters << s` channels (the first of each scale s > 0 strides by 2; the
    very first block activates before the residual); BN -> leaky ReLU(0.1) -> global average
    pool -> dense to nclass (with bias). Convs have no bias.

    Initial values depend only on `seed` (stateless RNG): two models built with the same
    arguments are identical (the trainer's EMA model relies on it). Variables are created in
    __init__, and `variables`, `trainable_variables` and `non_trainable_variables` list them in
    creation order (stem, blocks, final BN, dense kernel, dense bias), whatever the input size.
    Works for any image size >= 8 and any channel count. `compute_dtype` (float32, bfloat16 or
    float16): the type the layers compute in (see the module's docstring); not a variable's.
    """

    def __init__(self, nclass, channels, filters=32, repeat=4, scales=3, seed=0, bn_momentum=0.999,
                 sync_batch_norm=False, compute_dtype='float32', name='wide_resnet'):
        super().__init__(name=name)
        self.compute_dtype = tf.as_dtype(compute_dtype)
        self.nclass, self.channels = int(nclass), int(channels)
        self.filters, self.repeat, self.scales = int(filters), int(repeat), int(scales)
        self.sync_batch_norm = bool(sync_batch_norm)
        init = _KernelInit(seed)
        with self.name_scope:
            self.stem = tf.Variable(init.conv(3, self.channels, STEM_FILTERS), name='stem/kernel')
            self.blocks = []
            cin = STEM_FILTERS
            for s in range(self.scales):
                cout = self.filters << s
                for i in range(self.repeat):
                    self.blocks.append(ResidualBlock(
                        cin, cout, stride=2 if s > 0 and i == 0 else 1,
                        activate_before_residual=(s == 0 and i == 0), init=init, momentum=bn_momentum,
                        sync=sync_batch_norm, name=f'scale{s}_block{i}'))
                    cin = cout
            self.bn_out = BatchNorm(cin, bn_momentum, sync_batch_norm, name='bn_out')
            self.dense_kernel = tf.Variable(init.dense(cin, self.nclass), name='logits/kernel')
            self.dense_bias = tf.Variable(tf.zeros([self.nclass]), name='logits/bias')

    def _ordered_variables(self):
        out = [self.stem]
        for block in self.blocks:
            out += block.ordered_variables()
        return out + self.bn_out.ordered_variables() + [self.dense_kernel, self.dense_bias]

    @property
    def variables(self):
        """All variables, in creation order."""
        return tuple(self._ordered_variables())

    @property
    def trainable_variables(self):
        """Trainable variables (kernels, biases, BN gamma/beta), in creation order."""
        return tuple(v for v in self._ordered_variables() if v.trainable)

    @property
    def non_trainable_variables(self):
        """The batch-norm moving statistics, in creation order."""
        return tuple(v for v in self._ordered_variables() if not v.trainable)

    @property
    def kernels(self):
        """Conv and dense kernels (what weight decay applies to), in creation order."""
        out = [self.stem]
        for block in self.blocks:
            out += block.kernels
        return out + [self.dense_kernel]

    @property
    def batch_norms(self):
        """Every BatchNorm module, in creation order."""
        return [bn for block in self.blocks for bn in (block.bn1, block.bn2)] + [self.bn_out]

    @property
    def bn_momentum(self):
        """Momentum of the batch norms' moving averages."""
        return self.bn_out.momentum

    @property
    def batch_norm_stats(self):
        """Moving means and variances of every batch norm (non-trainable), in creation order."""
        return list(self.non_trainable_variables)

    def __call__(self, x, training=False, update_stats=True):
        """x: float32 [B, H, W, C] with pixel values in [0, 255] -> logits float32 [B, nclass].

        training: normalise with batch moments (else with the moving statistics).
        update_stats: in training mode, also update the moving statistics: a Python bool, or a
          float scalar tensor blending factor (see BatchNorm.__call__).
        """
        x = tf.convert_to_tensor(x)
        if x.dtype != tf.float32:
            x = tf.cast(x, tf.float32)
        dtype = self.compute_dtype
        y = tf.cast(x * (2.0 / 255.0) - 1.0, dtype)
        y = tf.nn.conv2d(y, tf.cast(self.stem, dtype), 1, 'SAME')
        for block in self.blocks:
            y = block(y, training, update_stats)
        y = _leaky_relu(self.bn_out(y, training, update_stats))
        y = tf.reduce_mean(y, [1, 2])
        logits = tf.matmul(y, tf.cast(self.dense_kernel, dtype)) + tf.cast(self.dense_bias, dtype)
        return tf.cast(logits, tf.float32)  # losses and softmax in float32


def build_model(arch, nclass, channels, filters, repeat, scales, seed=0, sync_batch_norm=False,
                compute_dtype='float32'):
    """The classifier named by `arch` (--arch): 'resnet' is MixMatch's Wide-ResNet."""
    if arch not in ARCHS:
        raise UserError(f'--arch={arch} is not a known architecture; valid: {", ".join(ARCHS)}.')
    return WideResNet(nclass, channels, filters=filters, repeat=repeat, scales=scales, seed=seed,
                      sync_batch_norm=sync_batch_norm, compute_dtype=compute_dtype)


def recompute_batch_norm(model, images, batch_size=256):
    """Sets every batch norm's moving statistics to those of `model`'s own activations on `images`.

    images: uint8 or float [N, H, W, C] in [0, 255] (N >= 1). The model runs in training mode over
    batches of `batch_size`; each batch norm's moving mean and variance become the average, over
    images, of its batch means and (unbiased) batch variances: the statistics that match the
    current weights, whatever moving averages the model held before (they are overwritten).
    Used for the evaluated (EMA) model, whose weights are averages that no batch ever ran through.
    """
    images = tf.convert_to_tensor(images)
    shape = [None] + images.shape[1:].as_list()
    step = tf.function(lambda x, f: model(tf.cast(x, tf.float32), training=True, update_stats=f),
                       input_signature=[tf.TensorSpec(shape, images.dtype),
                                        tf.TensorSpec([], tf.float32)],
                       autograph=False)  # plain tensor code: converting it only costs time
    seen = 0
    for start in range(0, int(images.shape[0]), batch_size):
        batch = images[start:start + batch_size]
        b = int(batch.shape[0])
        step(batch, tf.constant(b / (seen + b), tf.float32))  # the first batch replaces the old values
        seen += b
