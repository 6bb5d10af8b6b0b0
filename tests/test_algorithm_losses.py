"""The classic methods of algorithms/ (Pi-Model, Pseudo-Label, Mean Teacher, VAT, UDA): losses,
summaries, batch-norm updates and gradients against numpy, with a linear stand-in model."""
import importlib.util
import os
import re

import numpy as np
import pytest

from conftest import REPO

import libml  # noqa: F401
import tensorflow as tf

from libml.algorithm import GUESS, LABELED_MASK, MASK, Step, check
from libml.utils import UserError


def load(name):
    path = os.path.join(REPO, 'algorithms', name + '.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MODULES = {name: load(name) for name in ('pi_model', 'pseudo_label', 'mean_teacher', 'vat', 'uda')}
CLASSES = {'pi_model': 'PiModel', 'pseudo_label': 'PseudoLabel', 'mean_teacher': 'MeanTeacher',
           'vat': 'VAT', 'uda': 'UDA'}


class Linear:
    """A stand-in model: logits = flat(x) / 255 @ w; records (batch, training, update_stats)."""

    def __init__(self, w):
        self.w = tf.Variable(w, dtype=tf.float32)
        self.calls = []

    def __call__(self, x, training=False, update_stats=True):
        self.calls.append((int(x.shape[0]), training, update_stats))
        return tf.reshape(x, [x.shape[0], -1]) / 255.0 @ self.w


# 2x2x3 images, 3 classes, 3 labeled images, 6 unlabeled ones in two views. The weights' columns
# sum to 0, so brightness favours no class: the softmaxes are neither uniform nor one-hot.
K = 3
RNG = np.random.RandomState(0)
W = RNG.normal(0, 2, [12, K])
W -= W.mean(0)
X = RNG.randint(0, 256, [3, 2, 2, 3]).astype(np.uint8)
U = RNG.randint(0, 256, [2, 6, 2, 2, 3]).astype(np.uint8)
W_EMA = RNG.normal(0, 2, [12, K])
W_EMA -= W_EMA.mean(0)
LABEL = np.array([0, 2, 0])
U_LABEL = np.array([0, 2, 1, 1, 0, 2])


# numpy, float64: per-example values and their gradients with respect to the logits.
def flat(images):
    return np.asarray(images, np.float64).reshape(len(images), -1) / 255


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def onehot(y):
    return np.eye(K)[y]


def xe(z, y):
    return -np.log(softmax(z)[np.arange(len(y)), y])


def kl(p, z):  # KL(p || softmax(z))
    return (p * (np.log(p) - np.log(softmax(z)))).sum(1)


def entropy(z):
    p = softmax(z)
    return -(p * np.log(p)).sum(1)


def back(q, g):
    """Gradient with respect to the logits of q = softmax(logits), given g = dL/dq."""
    return q * (g - (q * g).sum(1, keepdims=True))


def d_entropy(z):
    p = softmax(z)
    return back(p, -(np.log(p) + 1))


def run(algo, batch, model, progress, ema=None):
    """-> loss, {tag: float, or an array for the per-example GUESS, MASK, LABELED_MASK},
    gradients with respect to [model.w] (+ [ema.w])."""
    with tf.GradientTape() as tape:
        loss, stats = algo.loss(batch, Step(model, ema, tf.constant(0.), tf.constant(progress)))
    grads = tape.gradient(loss, [model.w] + ([ema.w] if ema else []))
    per_example = (GUESS, MASK, LABELED_MASK)
    return float(loss), {k: np.asarray(v) if k in per_example else float(v)
                         for k, v in stats.items()}, grads


def assert_stats(stats, expect, rtol=1e-5):
    assert set(stats) == set(expect)
    for tag, value in expect.items():
        np.testing.assert_allclose(stats[tag], value, rtol=rtol, atol=1e-7, err_msg=tag)


ZX = flat(X) @ W
XE = xe(ZX, LABEL).mean()
D_XE = flat(X).T @ (softmax(ZX) - onehot(LABEL)) / len(X)   # gradient of the mean xe w.r.t. W


@pytest.mark.parametrize('module,teacher_w', [('pi_model', W), ('mean_teacher', W_EMA)])
def test_pi_model_and_mean_teacher(module, teacher_w):
    """xe + wu*ramp*mean (softmax teacher(u1) - softmax f(u2))^2; the teacher (Pi: the model on
    the first view; MT: the EMA model) gets no gradient; only the labeled forward moves BN stats."""
    mt = module == 'mean_teacher'
    algo = getattr(MODULES[module], CLASSES[module])(K, wu=10.0, warmup_pos=0.4)
    p1, z2 = softmax(flat(U[0]) @ teacher_w), flat(U[1]) @ W
    q2 = softmax(z2)
    sq = ((p1 - q2) ** 2).mean()
    for progress, ramp in ((0.1, 0.25), (1.0, 1.0)):
        model, ema = Linear(W), (Linear(W_EMA) if mt else None)
        loss, stats, grads = run(algo, {'x': X, 'label': LABEL, 'u': U}, model, progress, ema)
        assert_stats(stats, {'losses/xe': XE, 'losses/mt' if mt else 'losses/pm': sq,
                             GUESS: p1})
        np.testing.assert_allclose(loss, XE + 10 * ramp * sq, rtol=1e-5)
        expect = D_XE + 10 * ramp * flat(U[1]).T @ back(q2, 2 * (q2 - p1) / K) / len(z2)
        np.testing.assert_allclose(grads[0], expect, rtol=1e-4, atol=1e-6)
        if mt:
            assert model.calls == [(3, True, True), (6, True, False)]
            assert ema.calls == [(6, True, False)]   # the teacher: batch moments, stats untouched
            assert grads[1] is None                  # the EMA weights get no gradient at all
        else:
            assert model.calls == [(3, True, True), (6, True, False), (6, True, False)]


def test_pseudo_label():
    """xe + wu*ramp*mean over ALL u of [max p > threshold] CE(argmax p, f(u)); strict >; the
    arg-max carries no gradient; monitors/mask, and monitors/label_acc only with u_label."""
    algo = MODULES['pseudo_label'].PseudoLabel(K, wu=2.0, threshold=0.7, warmup_pos=0.4)
    zu = flat(U[0]) @ W
    p = softmax(zu)
    mask = p.max(1) > 0.7
    assert mask.tolist() == [True, False, False, False, True, True]
    pl = (mask * xe(zu, p.argmax(1))).mean()
    model = Linear(W)
    batch = {'x': X, 'label': LABEL, 'u': U[:1], 'u_label': U_LABEL}
    loss, stats, (grad,) = run(algo, batch, model, 0.1)
    assert model.calls == [(3, True, True), (6, True, False)]
    acc = (p.argmax(1) == U_LABEL).mean()
    assert 0 < acc < 1
    assert_stats(stats, {'losses/xe': XE, 'losses/pl': pl, 'monitors/mask': 0.5,
                         'monitors/label_acc': acc, GUESS: p, MASK: mask})
    np.testing.assert_allclose(loss, XE + 2 * 0.25 * pl, rtol=1e-5)
    dzu = mask[:, None] * (p - onehot(p.argmax(1))) / len(zu)
    np.testing.assert_allclose(grad, D_XE + 0.5 * flat(U[0]).T @ dzu, rtol=1e-4, atol=1e-6)
    # A blank image predicts exactly 1/3 per class: not above a threshold of 1/3 (strict >).
    u = U[:1].copy()
    u[0, 0] = 0
    _, stats, _ = run(MODULES['pseudo_label'].PseudoLabel(K, threshold=1 / 3),
                      {'x': X, 'label': LABEL, 'u': u}, Linear(W), 0.1)
    assert stats['monitors/mask'] == pytest.approx(5 / 6) and 'monitors/label_acc' not in stats


def test_vat():
    """One power iteration from d = stateless_normal(seed): r = eps*127.5*unit(grad_d KL(p(u) ||
    p(u + xi*127.5*d))); loss = xe + wu*ramp*KL(p(u) || p(u+r)) + entmin*H(p(u)); p(u) is a
    target in the KL term only (the entropy term does train it)."""
    vat = MODULES['vat']
    xi, eps = 0.5, 0.4   # a large probe: float32 is accurate and the probe's size matters
    algo = vat.VAT(K, wu=0.3, vat_eps=eps, vat_xi=xi, entmin=0.06, warmup_pos=0.4)
    seed = tf.constant([7, 11], tf.int64)
    u = U[0].astype(np.float64)
    zu = flat(u) @ W
    p = softmax(zu)
    d = tf.random.stateless_normal(u.shape, seed).numpy().reshape(len(u), -1).astype(np.float64)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    probe = flat(u) + xi * 127.5 / 255 * d
    g = (softmax(probe @ W) - p) @ W.T * (xi * 127.5 / 255) / len(u)   # d mean KL / d d
    r = eps * 127.5 * g / np.linalg.norm(g, axis=1, keepdims=True)    # in pixels
    model = Linear(W)
    got = algo.perturbation(model, tf.constant(u, tf.float32), model(u.astype(np.float32)), seed)
    got = got.numpy().reshape(len(u), -1)
    np.testing.assert_allclose(got, r, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(got / 127.5, axis=1), eps, rtol=1e-5)
    adv = flat(u) + r / 255
    kl_, ent = kl(p, adv @ W).mean(), entropy(zu).mean()
    model = Linear(W)
    batch = {'x': X, 'label': LABEL, 'u': U[:1], 'draws': algo.draw(seed, 3)}   # the seed itself
    loss, stats, (grad,) = run(algo, batch, model, 0.1)
    # labeled (moves the statistics), clean u, the probe, the perturbed u.
    assert model.calls == [(3, True, True)] + [(6, True, False)] * 3
    assert_stats(stats, {'losses/xe': XE, 'losses/vat': kl_, 'losses/entmin': ent, GUESS: p},
                 rtol=1e-3)
    np.testing.assert_allclose(loss, XE + 0.3 * 0.25 * kl_ + 0.06 * ent, rtol=1e-4)
    expect = (D_XE + 0.075 * adv.T @ (softmax(adv @ W) - p) / len(u)
              + 0.06 * flat(u).T @ d_entropy(zu) / len(u))
    np.testing.assert_allclose(grad, expect, rtol=1e-3, atol=1e-5)


def test_uda():
    """One forward over x+weak+strong moving BN stats; TSA (linear) keeps labeled examples whose
    true-class probability < eta; target = sharpened weak softmax (no gradient), kept where
    max p(weak) >= confidence; + wu*KL(target || strong) + we*H(weak)."""
    uda = MODULES['uda']
    algo = uda.UDA(K, wu=1.5, T=0.4, confidence=0.7, we=0.1, tsa='linear_schedule', uratio=2)
    zw, zs = flat(U[0]) @ W, flat(U[1]) @ W
    pw, px = softmax(zw), softmax(ZX)
    eta = 0.3 * (1 - 1 / K) + 1 / K   # progress 0.3: 0.53, where eta = alpha = 0.3 would differ
    keep = px[np.arange(3), LABEL] < eta
    assert keep.tolist() == [True, False, True]
    target = pw ** (1 / 0.4) / (pw ** (1 / 0.4)).sum(1, keepdims=True)
    mask = pw.max(1) >= 0.7
    assert mask.tolist() == [True, False, False, False, True, True]
    xe_ = (keep * xe(ZX, LABEL)).sum() / keep.sum()
    kl_, ent = (mask * kl(target, zs)).mean(), entropy(zw).mean()
    acc = (pw.argmax(1) == U_LABEL).mean()
    assert algo.uratio == 2   # what the input pipeline reads
    model = Linear(W)
    batch = {'x': X, 'label': LABEL, 'u': U, 'u_label': U_LABEL}
    loss, stats, (grad,) = run(algo, batch, model, 0.3)
    assert model.calls == [(3 + 2 * 6, True, True)]
    assert_stats(stats, {'losses/xe': xe_, 'losses/kl': kl_, 'losses/entropy': ent,
                         'monitors/mask': 0.5, 'monitors/tsa_kept': 2 / 3,
                         'monitors/label_acc': acc, GUESS: target, MASK: mask,
                         LABELED_MASK: keep})
    np.testing.assert_allclose(loss, xe_ + 1.5 * kl_ + 0.1 * ent, rtol=1e-5)
    expect = (flat(X).T @ (keep[:, None] * (px - onehot(LABEL))) / keep.sum()
              + 1.5 * flat(U[1]).T @ (mask[:, None] * (softmax(zs) - target)) / 6
              + 0.1 * flat(U[0]).T @ d_entropy(zw) / 6)
    np.testing.assert_allclose(grad, expect, rtol=1e-4, atol=1e-6)
    # At the end of the run every labeled example counts.
    _, stats, _ = run(algo, batch, Linear(W), 1.0)
    assert stats['monitors/tsa_kept'] == 1 and stats['losses/xe'] == pytest.approx(XE, rel=1e-5)
    # A blank weak view predicts exactly 1/3 per class: kept at confidence 1/3 (>=).
    u = U.copy()
    u[0, 0] = 0
    algo = uda.UDA(K, confidence=1 / 3, uratio=2)
    assert run(algo, {'x': X, 'label': LABEL, 'u': u}, Linear(W), 0.5)[1]['monitors/mask'] == 1


@pytest.mark.parametrize('module,changes', [
    ('pi_model', dict(wu=-1.0)), ('pi_model', dict(warmup_pos=1.5)),
    ('mean_teacher', dict(wu=-0.1)), ('mean_teacher', dict(warmup_pos=-0.1)),
    ('pseudo_label', dict(wu=-1.0)), ('pseudo_label', dict(threshold=1.5)),
    ('pseudo_label', dict(threshold=-0.1)), ('pseudo_label', dict(warmup_pos=2.0)),
    ('vat', dict(wu=-1.0)), ('vat', dict(vat_eps=0.0)), ('vat', dict(vat_xi=0.0)),
    ('vat', dict(vat_xi=-1e-6)), ('vat', dict(entmin=-0.06)), ('vat', dict(warmup_pos=1.1)),
    ('uda', dict(wu=-1.0)), ('uda', dict(T=0.0)), ('uda', dict(confidence=1.2)),
    ('uda', dict(confidence=-0.5)), ('uda', dict(we=-0.5)), ('uda', dict(tsa='cosine')),
    ('uda', dict(uratio=0)),
])
def test_bad_hyper_parameters_are_user_errors(module, changes):
    """An out-of-range hyper-parameter is a UserError naming its flag."""
    (flag, value), = changes.items()
    with pytest.raises(UserError, match=re.escape(f'--{flag}={value}')):
        getattr(MODULES[module], CLASSES[module])(K, **changes)


def test_contract_check():
    """libml.algorithm.check accepts the five methods and names what is wrong with broken ones."""
    for module, cls in CLASSES.items():
        algo = getattr(MODULES[module], cls)(K)
        assert check(algo) is algo

    class NoLoss:
        name, nu, args = 'NoLoss', 1, {}

    class OneArgument(NoLoss):
        def loss(self, batch):
            return 0.0, {}

    broken_nu = MODULES['pi_model'].PiModel(K)
    broken_nu.nu = -1
    short_views, odd_views = MODULES['uda'].UDA(K), MODULES['uda'].UDA(K)
    short_views.views, odd_views.views = ('weak',), ('weak', 'medium')
    for algo, message in ((NoLoss(), 'NoLoss .* it has no loss'),
                          (broken_nu, 'PiModel .* nu=-1 must be an int >= 0'),
                          (short_views, r"UDA .* views=\('weak',\) must be 2 of weak or strong"),
                          (odd_views, r"views=\('weak', 'medium'\) must be 2"),
                          (OneArgument(), r'OneArgument .* loss must take \(batch, step\)')):
        with pytest.raises(TypeError, match=message):
            check(algo)
