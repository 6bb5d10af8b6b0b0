"""Invariants of libml.layers: interleave, MixMode, sharpen/guess_label, TSA, confidence masks."""
import math

import numpy as np
import pytest

import libml  # noqa: F401  (sets TensorFlow's environment before TensorFlow is imported)
import tensorflow as tf

from libml import layers
from libml.utils import UserError


# ------------------------------------------------------------------------------------- interleave

def test_interleave_offsets():
    assert layers.interleave_offsets(64, 2) == [0, 21, 42, 64]
    assert layers.interleave_offsets(10, 2) == [0, 3, 6, 10]
    assert layers.interleave_offsets(9, 2) == [0, 3, 6, 9]
    assert layers.interleave_offsets(5, 1) == [0, 2, 5]


@pytest.mark.parametrize('batch,nu', [(64, 2), (10, 2), (7, 1), (9, 3)])
def test_interleave_is_its_own_inverse_and_mixes_kinds(batch, nu):
    # Batch p holds the kind p in column 0 and the position in column 1.
    xy = [tf.stack([tf.fill([batch], p), tf.range(batch)], 1) for p in range(nu + 1)]
    mixed = layers.interleave(xy, batch)
    assert [m.shape for m in mixed] == [x.shape for x in xy]
    offsets = layers.interleave_offsets(batch, nu)
    first_kinds = mixed[0][:, 0].numpy()
    for p in range(nu + 1):  # batch 0 holds slice p of batch p, for every kind p
        np.testing.assert_array_equal(first_kinds[offsets[p]:offsets[p + 1]], p)
    for i in range(1, nu + 1):  # batch i holds labeled examples where its slice i was
        kinds = mixed[i][:, 0].numpy()
        assert set(kinds) == {0, i}
        np.testing.assert_array_equal(kinds[offsets[i]:offsets[i + 1]], 0)
    back = layers.interleave(mixed, batch)
    for a, b in zip(back, xy):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Every example appears exactly once overall.
    pairs = np.concatenate([m.numpy() for m in mixed])
    assert len({tuple(r) for r in pairs}) == (nu + 1) * batch


# -------------------------------------------------------------------------------- label guessing

def test_sharpen():
    p = tf.constant([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [1.0, 0.0, 0.0]])
    s = layers.sharpen(p, 0.5).numpy()
    np.testing.assert_allclose(s.sum(1), 1, atol=1e-6)
    np.testing.assert_array_equal(s.argmax(1), p.numpy().argmax(1))
    expected = p.numpy() ** 2 / (p.numpy() ** 2).sum(1, keepdims=True)
    np.testing.assert_allclose(s, expected, atol=1e-6)
    np.testing.assert_allclose(layers.sharpen(p, 1.0).numpy(), p.numpy(), atol=1e-6)
    cold = layers.sharpen(p, 0.01).numpy()
    np.testing.assert_allclose(cold, np.eye(3)[p.numpy().argmax(1)], atol=1e-6)
    assert (s[:2].max(1) > p.numpy()[:2].max(1)).all()  # sharper than the input


def test_guess_label_averages_views_and_stops_gradient():
    a = tf.Variable([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    b = tf.constant([[1.0, 1.0, 0.0], [0.0, 3.0, 0.0]])
    with tf.GradientTape() as tape:
        q = layers.guess_label([a, b], 0.5)
        loss = tf.reduce_sum(q * tf.constant([[1.0, 2.0, 3.0]]))
    assert tape.gradient(loss, a) is None
    mean = (tf.nn.softmax(a) + tf.nn.softmax(b)).numpy() / 2
    expected = mean ** 2 / (mean ** 2).sum(1, keepdims=True)
    np.testing.assert_allclose(q.numpy(), expected, atol=1e-6)


# ------------------------------------------------------------------------------------------ MixUp

def test_mixup_values():
    x = tf.constant([[0.0], [10.0], [20.0]])
    p = tf.constant([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    lam = tf.constant([0.75, 0.5, 1.0])
    mx, mp = layers.mixup(x, p, lam, tf.constant([1, 0, 0]))
    np.testing.assert_allclose(mx.numpy(), [[2.5], [5.0], [20.0]])
    np.testing.assert_allclose(mp.numpy(), [[0.75, 0.25], [0.5, 0.5], [0.5, 0.5]])


def test_mixmode_rejects_unknown_mode():
    with pytest.raises(UserError) as e:
        layers.MixMode('xy.yx')
    assert '--mixmode' in str(e.value) and 'xxy.yxy' in str(e.value) and '.yy' in str(e.value)


def _tagged_parts(batch, nu, size=3):
    """Parts whose image pixels all equal the example's global index and whose targets are
    one-hot on that index, so a mixed row says which examples were mixed and with what weight."""
    n = (nu + 1) * batch
    xs = [tf.broadcast_to(tf.reshape(tf.range(p * batch, (p + 1) * batch, dtype=tf.float32), [batch, 1, 1, 1]),
                          [batch, size, size, 2]) for p in range(nu + 1)]
    ps = [tf.one_hot(tf.range(p * batch, (p + 1) * batch), n) for p in range(nu + 1)]
    return xs, ps


# What each side of a mode may mix with: 'x' = labeled indices, 'u' = unlabeled, None = not mixed.
_PARTNERS = {'xx': 'x', 'xxy': 'xu', '': None, 'yy': 'u', 'yx': 'x', 'yxy': 'xu'}


@pytest.mark.parametrize('mode', layers.MixMode.MODES)
def test_mixmode_semantics(mode):
    batch, nu = 12, 2
    n = (nu + 1) * batch
    mm = layers.MixMode(mode)
    draws = mm.draw(tf.constant([3, 4], tf.int64), batch, nu, 0.75)
    lam = draws['lam'].numpy()
    assert lam.shape == (n,) and (lam >= 0.5).all() and (lam <= 1).all()
    xs, ps = _tagged_parts(batch, nu)
    mxs, mps = mm(xs, ps, draws)
    assert [m.shape for m in mxs] == [x.shape for x in xs]
    assert [m.shape for m in mps] == [p.shape for p in ps]
    x_all = np.concatenate([m.numpy() for m in mxs])
    p_all = np.concatenate([m.numpy() for m in mps])
    np.testing.assert_allclose(p_all.sum(1), 1, atol=1e-6)
    # Images and targets are mixed alike: pixel value = sum_k k * target_k.
    np.testing.assert_allclose(x_all[:, 0, 0, 0], p_all @ np.arange(n), atol=1e-4)
    assert np.ptp(x_all.reshape(n, -1), axis=1).max() < 1e-4

    left, right = mode.split('.')
    kinds = {'x': set(range(batch)), 'u': set(range(batch, n))}
    mixed_partner_kinds = set()
    for i in range(n):
        allowed = _PARTNERS[left if i < batch else right]
        row = p_all[i]
        if allowed is None:  # not mixed: its own one-hot target and image (pixel check above)
            np.testing.assert_array_equal(row, np.eye(n)[i])
            continue
        if row[i] < 1 - 1e-6:  # mixed with another example: its own weight is its lam >= 0.5
            np.testing.assert_allclose(row[i], lam[i], atol=1e-6)
        partners = {k for k in np.flatnonzero(row > 1e-7) if k != i}
        assert len(partners) <= 1
        for k in partners:
            assert any(k in kinds[a] for a in allowed), (i, k, mode)
            mixed_partner_kinds.add((i >= batch, 'x' if k < batch else 'u'))
    # Where a side may mix with both kinds, it does (36 examples, fixed seed).
    if left == 'xxy':
        assert {(False, 'x'), (False, 'u')} <= mixed_partner_kinds
    if right == 'yxy':
        assert {(True, 'x'), (True, 'u')} <= mixed_partner_kinds


def test_mixmode_identity_and_unlabeled_untouched():
    batch, nu = 8, 2
    xs, ps = _tagged_parts(batch, nu)
    mm = layers.MixMode('.')
    mxs, mps = mm(xs, ps, mm.draw(tf.constant([1, 2]), batch, nu, 0.75))
    for a, b in zip(mxs + mps, xs + ps):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    mm = layers.MixMode('xx.')
    mxs, mps = mm(xs, ps, mm.draw(tf.constant([1, 2]), batch, nu, 0.75))
    for a, b in zip(mxs[1:] + mps[1:], xs[1:] + ps[1:]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(mxs[0].numpy(), xs[0].numpy())
    assert mps[0].numpy()[:, batch:].max() == 0  # labeled mixed with labeled only


def test_mixmode_xx_yx_uses_each_labeled_example_nu_times():
    batch, nu = 6, 3
    mm = layers.MixMode('xx.yx')
    draws = mm.draw(tf.constant([5, 6]), batch, nu, 0.75)
    assert sorted(draws['perm_u'].numpy()) == list(range(nu * batch))
    xs, ps = _tagged_parts(batch, nu)
    _, mps = mm(xs, ps, draws)
    u_rows = np.concatenate([m.numpy() for m in mps[1:]])
    partner_mass = u_rows[:, :batch]
    assert partner_mass.sum() > 0 and (np.count_nonzero(partner_mass, axis=0) <= nu).all()


def test_mixmode_draw_is_deterministic_per_seed():
    mm = layers.MixMode('xxy.yxy')
    a = mm.draw(tf.constant([1, 2], tf.int64), 16, 2, 0.75)
    b = mm.draw(tf.constant([1, 2], tf.int64), 16, 2, 0.75)
    c = mm.draw(tf.constant([1, 3], tf.int64), 16, 2, 0.75)
    assert set(a) == {'lam', 'perm'}
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    assert not np.array_equal(a['lam'].numpy(), c['lam'].numpy())
    assert not np.array_equal(a['perm'].numpy(), c['perm'].numpy())
    assert sorted(a['perm'].numpy()) == list(range(48))
    assert a['perm'].dtype == tf.int32 and a['lam'].dtype == tf.float32
    # int32 seeds work too, and beta <= 0 means no mixing.
    none = mm.draw(tf.constant([1, 2], tf.int32), 16, 2, 0.0)
    np.testing.assert_array_equal(none['lam'].numpy(), 1.0)
    # Supervised MixUp (fs_mixup) draws for the labeled batch alone: nu = 0.
    sup = layers.MixMode('xx.').draw(tf.constant([1, 2]), 16, 0, 0.5)
    assert set(sup) == {'lam', 'perm_x'} and sup['lam'].shape == (16,)
    assert sorted(sup['perm_x'].numpy()) == list(range(16))


def test_mixmode_draw_in_a_dataset_map_and_lam_distribution():
    mm = layers.MixMode('xxy.yxy')
    ds = tf.data.Dataset.range(3).map(lambda i: mm.draw(tf.stack([tf.constant(7, tf.int64), i]), 64, 2, 0.75))
    draws = list(ds)
    assert len(draws) == 3 and not np.array_equal(draws[0]['lam'], draws[1]['lam'])
    lam = np.concatenate([d['lam'].numpy() for d in draws])
    # E[max(l, 1-l)] for l ~ Beta(0.75, 0.75) is about 0.79; a uniform lam would give 0.75.
    assert 0.74 < lam.mean() < 0.84 and lam.min() >= 0.5


def test_mixmode_under_tf_function():
    batch, nu = 8, 2
    mm = layers.MixMode('xxy.yxy')
    xs, ps = _tagged_parts(batch, nu)
    draws = mm.draw(tf.constant([1, 1]), batch, nu, 0.75)
    eager = mm(xs, ps, draws)
    graph = tf.function(lambda xs, ps, d: mm(xs, ps, d))(xs, ps, draws)
    for a, b in zip(eager[0] + eager[1], graph[0] + graph[1]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


# -------------------------------------------------------------------------------------------- TSA

@pytest.mark.parametrize('nclass', [2, 10])
def test_tsa_threshold_ends(nclass):
    def eta(alpha):
        return alpha * (1 - 1 / nclass) + 1 / nclass

    e5 = math.exp(-5)
    # (start, end) of each schedule: UDA's exp and log schedules reach 1/K and 1 within exp(-5).
    ends = {'linear_schedule': (eta(0), eta(1)), 'exp_schedule': (eta(e5), eta(1)),
            'log_schedule': (eta(0), eta(1 - e5)), 'none': (1.0, 1.0)}
    assert set(ends) == set(layers.TSA_SCHEDULES)
    for schedule, (start, end) in ends.items():
        for t, want in [(0.0, start), (-1.0, start), (1.0, end), (3.0, end)]:
            got = layers.tsa_threshold(schedule, t, nclass).numpy()
            np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f'{schedule} t={t}')
            assert got.dtype == np.float32
        assert abs(start - 1 / nclass) < 0.007 or schedule == 'none'
        assert abs(end - 1) < 0.007


def test_tsa_threshold_midpoints():
    k = 10

    def eta(alpha):
        return alpha * 0.9 + 0.1

    np.testing.assert_allclose(layers.tsa_threshold('linear_schedule', 0.5, k).numpy(), eta(0.5), atol=1e-6)
    np.testing.assert_allclose(layers.tsa_threshold('exp_schedule', 0.5, k).numpy(), eta(math.exp(-2.5)), atol=1e-6)
    np.testing.assert_allclose(layers.tsa_threshold('log_schedule', 0.5, k).numpy(), eta(1 - math.exp(-2.5)),
                               atol=1e-6)
    np.testing.assert_allclose(layers.tsa_threshold('linear_schedule', tf.constant(0.25), k).numpy(), eta(0.25),
                               atol=1e-6)


def test_tsa_threshold_rejects_unknown_schedule():
    with pytest.raises(UserError) as e:
        layers.tsa_threshold('cosine', 0.5, 10)
    assert '--tsa' in str(e.value) and 'linear_schedule' in str(e.value)


def test_tsa_mask_hand_cases():
    targets = tf.constant([
        [1.0, 0.0, 0.0],   # a: p_0 = 0.4 < 0.5 -> keep
        [1.0, 0.0, 0.0],   # b: p_0 = 0.6 >= 0.5 -> drop
        [0.7, 0.3, 0.0],   # c: p_0 = 0.3 < 0.35 -> keep
        [0.7, 0.3, 0.0],   # d: p_0 = 0.5 >= 0.35 but p_1 = 0.1 < 0.15 -> keep (second class)
        [0.7, 0.3, 0.0],   # e: 0.5 >= 0.35 and 0.2 >= 0.15 -> drop
        [1.0, 0.0, 0.0],   # f: classes without target mass never keep an example -> drop
    ])
    probs = tf.constant([
        [0.4, 0.3, 0.3],
        [0.6, 0.2, 0.2],
        [0.3, 0.1, 0.6],
        [0.5, 0.1, 0.4],
        [0.5, 0.2, 0.3],
        [0.9, 0.05, 0.05],
    ])
    mask = layers.tsa_mask(probs, targets, 0.5)
    assert mask.dtype == tf.float32
    np.testing.assert_array_equal(mask.numpy(), [1, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(layers.tsa_mask(probs, targets, tf.constant(0.2)).numpy(), [0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(layers.tsa_mask(probs, targets, 1.0).numpy(), [1] * 6)
    np.testing.assert_array_equal(layers.tsa_mask(targets, targets, 1.0).numpy(), [1] * 6)


# ---------------------------------------------------------------------------------- masks, means

def test_confidence_mask_drops_lowest():
    conf = np.array([0.9, 0.2, 0.5, 0.35, 0.8, 0.3, 0.95, 0.6, 0.45, 0.7], np.float32)
    probs = np.stack([conf, 1 - conf], 1)  # max prob = max(c, 1-c)
    top = probs.max(1)
    for percent, ndrop in [(0.3, 3), (0.25, 2), (0.7, 7), (0.05, 0), (0.99, 9), (0.1, 1)]:
        mask = layers.confidence_mask(probs, percent).numpy()
        assert mask.dtype == np.float32 and mask.sum() == 10 - ndrop, (percent, mask)
        if ndrop:
            assert top[mask == 0].max() <= top[mask == 1].min()
    for off in (-1, 0, -0.5):
        np.testing.assert_array_equal(layers.confidence_mask(probs, off).numpy(), 1)


def test_confidence_mask_ties_and_tensor_percent():
    probs = tf.fill([7, 4], 0.25)
    mask = layers.confidence_mask(probs, 0.5).numpy()
    np.testing.assert_array_equal(mask, [0, 0, 0, 1, 1, 1, 1])
    fn = tf.function(layers.confidence_mask)
    np.testing.assert_array_equal(fn(probs, tf.constant(0.5)).numpy(), mask)
    np.testing.assert_array_equal(fn(probs, tf.constant(-1.0)).numpy(), 1)


def test_masked_mean():
    values = tf.constant([1.0, 2.0, 3.0, 10.0])
    assert layers.masked_mean(values, tf.constant([1.0, 0.0, 1.0, 0.0])).numpy() == 2.0
    assert layers.masked_mean(values, tf.zeros([4])).numpy() == 0.0
    # A per-example mask over [N, K] values counts K entries per kept example.
    sq = tf.constant([[1.0, 3.0], [100.0, 100.0]])
    assert layers.masked_mean(sq, tf.constant([[1.0], [0.0]])).numpy() == 2.0
