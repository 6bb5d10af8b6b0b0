"""Pure tensor functions of the semi-supervised losses: interleave, MixUp modes, sharpening, TSA, masks.

Everything here is a function of its tensor arguments (no variables, no flags, no hidden random
state), so it runs the same eagerly, inside `tf.function`, in a `tf.data` map and under a
distribution strategy. Shapes: B = batch, K = classes, nu = unlabeled views per example.
"""
import tensorflow as tf

from libml.utils import UserError


# ---------------------------------------------------------------------------------------------
# Interleave (MixMatch): the model updates its batch-norm statistics from the first of the nu+1
# forward batches only, so that batch must hold labeled and unlabeled examples in proportion.
# ---------------------------------------------------------------------------------------------

def interleave_offsets(batch, nu):
    """Boundaries of the nu+1 slices each batch is cut into: list of nu+2 ints from 0 to `batch`.

    Slices are `batch // (nu+1)` long; the remainder goes to the last slices (64, 2 -> [0, 21, 42, 64]).
    """
    groups = [batch // (nu + 1)] * (nu + 1)
    for i in range(batch - sum(groups)):
        groups[-i - 1] += 1
    offsets = [0]
    for g in groups:
        offsets.append(offsets[-1] + g)
    return offsets


def interleave(xy, batch):
    """Swaps slice i of batch 0 with slice i of batch i, for i = 1..nu.

    xy: list of nu+1 tensors [batch, ...] (labeled first, then the nu unlabeled batches)
    -> list of nu+1 tensors [batch, ...] in which every batch holds examples of both kinds.
    The swap is its own inverse: interleave(interleave(xy, batch), batch) == xy, which is how
    the logits of the interleaved batches are put back in order.
    """
    nu = len(xy) - 1
    offsets = interleave_offsets(batch, nu)
    parts = [[v[offsets[p]:offsets[p + 1]] for p in range(nu + 1)] for v in xy]
    for i in range(1, nu + 1):
        parts[0][i], parts[i][i] = parts[i][i], parts[0][i]
    return [tf.concat(v, axis=0) for v in parts]


# ---------------------------------------------------------------------------------------------
# Label guessing
# ---------------------------------------------------------------------------------------------

def sharpen(p, T):
    """Temperature sharpening: p [N, K] probabilities -> p^(1/T) / sum_K p^(1/T), [N, K].

    Computed as softmax(log(p) / T), which is the same value but does not underflow to 0/0 when
    T is small; a zero probability stays zero.
    """
    p = tf.convert_to_tensor(p, tf.float32)
    return tf.nn.softmax(tf.math.log(p) / T, axis=-1)


def guess_label(logits_per_view, T):
    """MixMatch's label guess: list of nu logits [B, K] (one per view of the same images)
    -> sharpen(mean_k softmax(logits_k), T) [B, K], a constant for the gradient."""
    probs = tf.add_n([tf.nn.softmax(logits) for logits in logits_per_view]) / len(logits_per_view)
    return tf.stop_gradient(sharpen(probs, T))


# ---------------------------------------------------------------------------------------------
# MixUp
# ---------------------------------------------------------------------------------------------

def _expand_like(lam, x):
    """lam [N] -> [N, 1, ..., 1] broadcastable against x [N, ...]."""
    return tf.reshape(lam, tf.concat([tf.shape(lam), tf.ones([tf.rank(x) - 1], tf.int32)], 0))


def _mix_pair(x0, p0, x1, p1, lam, index):
    """lam*x0 + (1-lam)*x1[index], and the same for the targets.

    x0 [N, ...], p0 [N, K], x1 [M, ...], p1 [M, K], lam [N], index [N] ints in [0, M).
    """
    lam = tf.cast(lam, x0.dtype)
    lx = _expand_like(lam, x0)
    lp = tf.cast(lam, p0.dtype)[:, None]
    x = lx * x0 + (1 - lx) * tf.gather(x1, index)
    p = lp * p0 + (1 - lp) * tf.gather(p1, index)
    return x, p


def mixup(x, p, lam, perm):
    """MixUp with given weights: x [N, ...], p [N, K], lam [N], perm [N] ints (a permutation)
    -> (lam*x + (1-lam)*x[perm] [N, ...], lam*p + (1-lam)*p[perm] [N, K])."""
    return _mix_pair(x, p, x, p, lam, perm)


def _stateless_permutation(n, seed):
    """A uniformly random permutation of range(n) [n] int32, from a stateless seed [2]."""
    return tf.argsort(tf.random.stateless_uniform([n], seed), stable=True)


def _stateless_beta(n, beta, seed):
    """n draws of Beta(beta, beta) as float32 [n], via two gamma draws; beta <= 0 gives 1 (no mix)."""
    beta = tf.convert_to_tensor(beta, tf.float32)
    alpha = tf.maximum(beta, 1e-6)
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    g1 = tf.random.stateless_gamma([n], s1, alpha=alpha)
    g2 = tf.random.stateless_gamma([n], s2, alpha=alpha)
    lam = g1 / tf.maximum(g1 + g2, 1e-30)
    # Tiny alphas can give 0/0 (both gammas underflow): any lam is right in the limit, take 1.
    lam = tf.where(tf.math.is_finite(lam) & (g1 + g2 > 0), lam, tf.ones_like(lam))
    return tf.where(beta > 0, lam, tf.ones_like(lam))


class MixMode:
    """MixUp of labeled (x) and unlabeled (y) examples, as in MixMatch's `MixMode`.

    A mode reads `<labeled>.<unlabeled>`: left of the dot what the labeled examples are mixed
    with (`xx` labeled only, `xxy` labeled and unlabeled, empty: not mixed), right of it what
    the unlabeled examples are mixed with (`yy` unlabeled only, `yx` labeled only, `yxy` all,
    empty: not mixed). RealMix uses `xxy.yxy`.

    Randomness and arithmetic are split: `draw` makes all the random numbers of one mix (outside
    compiled code: stateless_gamma does not compile under XLA), `__call__` applies them.
    """
    MODES = ('xxy.yxy', 'xx.yxy', 'xx.yx', 'xx.yy', 'xx.', '.yy', 'xxy.', '.yxy', '.')

    def __init__(self, mode):
        if mode not in self.MODES:
            raise UserError(f'--mixmode={mode} is not a mix mode; valid modes: {", ".join(self.MODES)}.')
        self.mode = mode
        self.left, self.right = mode.split('.')

    def __repr__(self):
        return f'MixMode({self.mode!r})'

    def draw(self, seed, batch, nu, beta):
        """All the random numbers of one mix of parts [x (batch), u_1 .. u_nu (batch each)].

        seed: int32/int64 [2] stateless seed; batch, nu: Python ints; beta: Beta parameter (> 0;
        <= 0 means lam = 1, no mixing). Returns a dict of tensors (its keys depend on the mode,
        never on the seed):
          'lam'    float32 [(nu+1)*batch]  per-example weight, lam ~ Beta(beta, beta), max(lam, 1-lam)
          'perm'   int32 [(nu+1)*batch]    permutation of the concatenation [x, u_1..u_nu]
                                           (modes xxy.*, *.yxy)
          'perm_x' int32 [batch]           permutation of x (modes xx.*)
          'perm_u' int32 [nu*batch]        permutation of [u_1..u_nu] (.yy, xx.yy), or, for xx.yx,
                                           of nu tiled copies of x (each labeled image used nu times)
        """
        seed = tf.convert_to_tensor(seed)
        if seed.dtype not in (tf.int32, tf.int64):
            seed = tf.cast(seed, tf.int64)
        s_lam, s_all, s_x, s_u = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
        n = (nu + 1) * batch
        lam = _stateless_beta(n, beta, s_lam)
        draws = {'lam': tf.maximum(lam, 1 - lam)}
        if self.left == 'xxy' or self.right == 'yxy':
            draws['perm'] = _stateless_permutation(n, s_all)
        if self.left == 'xx':
            draws['perm_x'] = _stateless_permutation(batch, s_x)
        if self.right in ('yy', 'yx'):
            draws['perm_u'] = _stateless_permutation(nu * batch, s_u)
        return draws

    def __call__(self, xs, ps, draws):
        """Mixes with pre-drawn randomness (see `draw`, called with this batch and nu).

        xs: list of nu+1 image tensors [batch, H, W, C] (labeled first); ps: list of nu+1
        target tensors [batch, K] (rows sum to 1). -> (list of nu+1 [batch, H, W, C],
        list of nu+1 [batch, K]): images and targets mixed alike, same shapes, rows still sum to 1.
        """
        if len(xs) != len(ps) or len(xs) < 2:
            raise ValueError(f'MixMode needs nu+1 >= 2 image and target tensors, got {len(xs)} and {len(ps)}.')
        nu = len(xs) - 1
        batch = tf.shape(xs[0])[0]
        lam = draws['lam']
        lam_x, lam_u = lam[:batch], lam[batch:]
        x0, p0 = xs[0], ps[0]
        if self.left == 'xxy' and self.right == 'yxy':  # everything with everything: one gather
            mx, mp = mixup(tf.concat(xs, 0), tf.concat(ps, 0), lam, draws['perm'])
            return tf.split(mx, nu + 1), tf.split(mp, nu + 1)

        if self.left == 'xx':
            mx, mp = mixup(x0, p0, lam_x, draws['perm_x'])
        elif self.left == 'xxy':
            x_all, p_all = tf.concat(xs, 0), tf.concat(ps, 0)
            mx, mp = _mix_pair(x0, p0, x_all, p_all, lam_x, draws['perm'][:batch])
        else:
            mx, mp = x0, p0

        if not self.right:
            return [mx] + list(xs[1:]), [mp] + list(ps[1:])
        u, q = tf.concat(xs[1:], 0), tf.concat(ps[1:], 0)
        if self.right == 'yy':
            mu, mq = mixup(u, q, lam_u, draws['perm_u'])
        elif self.right == 'yx':
            x_tiled, p_tiled = tf.concat([x0] * nu, 0), tf.concat([p0] * nu, 0)
            mu, mq = _mix_pair(u, q, x_tiled, p_tiled, lam_u, draws['perm_u'])
        else:  # 'yxy'
            x_all, p_all = tf.concat(xs, 0), tf.concat(ps, 0)
            mu, mq = _mix_pair(u, q, x_all, p_all, lam_u, draws['perm'][batch:])
        return [mx] + tf.split(mu, nu), [mp] + tf.split(mq, nu)


# ---------------------------------------------------------------------------------------------
# Training signal annealing (UDA) and confidence masking
# ---------------------------------------------------------------------------------------------

TSA_SCHEDULES = ('none', 'linear_schedule', 'exp_schedule', 'log_schedule')


def tsa_threshold(schedule, progress, nclass):
    """Training-signal-annealing threshold eta, a float32 scalar in [1/K, 1].

    progress: scalar t = step / (train_kimg*1024) (clipped to [0, 1] here); alpha(t) = t
    (linear_schedule), exp((t-1)*5) (exp_schedule), 1-exp(-5t) (log_schedule);
    eta = alpha*(1-1/K) + 1/K. 'none' gives 1.0, which `tsa_mask` treats as keep-all.
    """
    if schedule not in TSA_SCHEDULES:
        raise UserError(f'--tsa={schedule} is not a TSA schedule; valid: {", ".join(TSA_SCHEDULES)}.')
    if schedule == 'none':
        return tf.constant(1.0, tf.float32)
    t = tf.clip_by_value(tf.cast(progress, tf.float32), 0.0, 1.0)
    if schedule == 'linear_schedule':
        alpha = t
    elif schedule == 'exp_schedule':
        alpha = tf.exp((t - 1) * 5)
    else:
        alpha = 1 - tf.exp(-5 * t)
    return alpha * (1 - 1 / nclass) + 1 / nclass


def tsa_mask(probs, targets, eta):
    """Which labeled examples still count in the loss under TSA -> float32 [B] of 0/1.

    probs [B, K] predicted probabilities; targets [B, K] mixed label distributions; eta scalar.
    Example b is kept while, for some class c with targets[b, c] > 0, probs[b, c] <
    targets[b, c] * eta (its prediction has not yet reached the allowed share of some target
    class). eta >= 1 (schedule 'none', or the end of training) keeps every example.
    (The original RealMix multiplied eta by the logits instead of the target mass; not copied.)
    """
    probs = tf.convert_to_tensor(probs, tf.float32)
    targets = tf.convert_to_tensor(targets, tf.float32)
    eta = tf.cast(eta, tf.float32)
    below = (targets > 0) & (probs < targets * eta)
    keep = tf.reduce_any(below, axis=-1) | (eta >= 1)
    return tf.cast(keep, tf.float32)


def confidence_mask(probs, percent):
    """Drops the least confident examples -> float32 mask [N] of 0/1.

    probs [N, K]; confidence = max_K probs. With 0 < percent < 1, exactly floor(percent*N)
    examples get 0: those of lowest confidence, ties broken by position (earlier first).
    percent <= 0 (including -1, the flag's "off") -> all ones. `percent` may be a Python number
    or a scalar tensor; floor tolerates float rounding (0.7 * 10 drops 7, not 6).
    """
    probs = tf.convert_to_tensor(probs, tf.float32)
    n = tf.shape(probs)[0]
    confidence = tf.reduce_max(probs, axis=-1)
    order = tf.argsort(confidence, stable=True)              # ascending: least confident first
    rank = tf.math.invert_permutation(order)                  # rank[i] = position of i in order
    percent = tf.cast(percent, tf.float64)
    ndrop = tf.floor(percent * tf.cast(n, tf.float64) + 1e-6)
    ndrop = tf.cast(tf.where(percent > 0, tf.minimum(ndrop, tf.cast(n, tf.float64)), 0.0), tf.int32)
    return tf.cast(rank >= ndrop, tf.float32)


def masked_mean(values, mask):
    """sum(values * mask) / max(sum(mask), 1): the mean over kept entries, 0 when none is kept.

    values and mask of the same (broadcastable) shape; float32 scalar.
    """
    values = tf.convert_to_tensor(values, tf.float32)
    mask = tf.cast(mask, tf.float32)
    return tf.reduce_sum(values * mask) / tf.maximum(tf.reduce_sum(mask * tf.ones_like(values)), 1.0)


# ---------------------------------------------------------------------------------------------
# Consistency losses of the classic methods (algorithms/: Pi-Model, Pseudo-Label, Mean Teacher,
# VAT, UDA). Per-example values [N]; the algorithm takes the mean.
# ---------------------------------------------------------------------------------------------

def ramp_up(progress, end):
    """The linear ramp of an unlabeled-loss weight: min(progress / end, 1) (1 when end <= 0).

    progress: the run's fraction done (Step.progress); end: where the ramp reaches 1, as a
    fraction of the run (MixMatch's comparison: 0.4, its --warmup_pos)."""
    if end <= 0:
        return tf.constant(1.0, tf.float32)
    return tf.clip_by_value(tf.cast(progress, tf.float32) / end, 0.0, 1.0)


def cross_entropy(labels, logits):
    """Mean cross-entropy of integer `labels` [N] under `logits` [N, K] (a float32 scalar)."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                                         logits=logits))


def softmax_squared_error(logits_a, logits_b):
    """mean_K (softmax(a) - softmax(b))^2 per example: the Pi-Model's and Mean Teacher's loss."""
    return tf.reduce_mean(tf.square(tf.nn.softmax(logits_a) - tf.nn.softmax(logits_b)), axis=-1)


def kl_divergence(p_logits, q_logits):
    """KL(softmax(p) || softmax(q)) per example: sum_K p (log p - log q)."""
    log_p, log_q = tf.nn.log_softmax(p_logits), tf.nn.log_softmax(q_logits)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def entropy(logits):
    """The entropy -sum_K p log p of softmax(logits), per example."""
    log_p = tf.nn.log_softmax(logits)
    return -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)
