"""The Wide-ResNet: parameter count, shapes, determinism, batch-norm statistics, gradients, sync BN."""
import json
import textwrap

import numpy as np
import pytest

import libml  # noqa: F401  (sets TensorFlow's environment before TensorFlow is imported)
import tensorflow as tf

from libml import models
from libml.utils import UserError
from conftest import REPO, assert_ok, run_script

TINY = dict(filters=4, repeat=1, scales=1)


def tiny(nclass=5, channels=3, seed=0, **kwargs):
    return models.WideResNet(nclass, channels, **dict(TINY, seed=seed, **kwargs))


def images(shape, seed=0):
    return tf.random.stateless_uniform(shape, [seed, 17], 0, 255)


def test_parameter_count_of_wrn_28_2():
    model = models.build_model('resnet', nclass=10, channels=3, filters=32, repeat=4, scales=3)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == 1_467_610
    # stem + 12 blocks x 2 convs + 2 shortcuts (16->32 is the first block; 32->64, 64->128) + dense
    assert len(model.kernels) == 1 + 24 + 3 + 1
    assert len(model.batch_norm_stats) == 2 * (2 * 12 + 1)
    # Nothing is missed by the creation-ordered lists: tf.Module's own traversal finds the same.
    assert {id(v) for v in tf.Module.variables.fget(model)} == {id(v) for v in model.variables}
    assert len(model.variables) == len(tf.Module.variables.fget(model))


def test_default_scales():
    assert [models.default_scales(s) for s in (8, 16, 32, 64, 96, 4)] == [1, 2, 3, 4, 4, 1]


def test_build_model_rejects_unknown_arch():
    with pytest.raises(UserError) as e:
        models.build_model('vgg', 10, 3, 32, 4, 3)
    assert 'vgg' in str(e.value) and 'resnet' in str(e.value)


@pytest.mark.parametrize('size,channels', [(8, 1), (32, 3), (96, 3), (9, 2)])
def test_output_shapes(size, channels):
    model = models.WideResNet(7, channels, filters=4, repeat=1, scales=models.default_scales(size))
    x = images([3, size, size, channels])
    for training in (True, False):
        logits = model(x, training=training)
        assert logits.shape == (3, 7) and logits.dtype == tf.float32
        assert np.isfinite(logits.numpy()).all()


def test_integer_images_are_accepted():
    model = tiny()
    x = images([2, 8, 8, 3])
    np.testing.assert_allclose(model(tf.cast(tf.round(x), tf.uint8)).numpy(), model(tf.round(x)).numpy())


def test_variable_order_and_names():
    model = tiny(scales=2, repeat=2)
    names = [v.name for v in model.variables]
    assert names[0] == 'wide_resnet/stem/kernel:0'
    assert names[1:5] == [f'wide_resnet/scale0_block0/bn1/{n}:0'
                          for n in ('gamma', 'beta', 'moving_mean', 'moving_variance')]
    assert names[-2:] == ['wide_resnet/logits/kernel:0', 'wide_resnet/logits/bias:0']
    assert 'wide_resnet/scale1_block0/shortcut/kernel:0' in names
    assert 'wide_resnet/scale1_block1/shortcut/kernel:0' not in names
    assert len(set(names)) == len(names)
    assert [v.name for v in tiny(scales=2, repeat=2).variables] == names


def _reference_logits(model, x):
    """The architecture written out plainly (inference mode, unfused batch norm)."""
    def bn_act(bn, h):
        h = (h - bn.moving_mean) / tf.sqrt(bn.moving_variance + 1e-3) * bn.gamma + bn.beta
        return tf.where(h > 0, h, 0.1 * h)

    h = tf.nn.conv2d(x / 127.5 - 1, model.stem, 1, 'SAME')
    for index, block in enumerate(model.blocks):
        stride = 2 if index % model.repeat == 0 and index > 0 else 1
        a = bn_act(block.bn1, h)
        shortcut = a if index == 0 else h
        r = tf.nn.conv2d(bn_act(block.bn2, tf.nn.conv2d(a, block.conv1, stride, 'SAME')), block.conv2, 1, 'SAME')
        if block.shortcut is not None:
            shortcut = tf.nn.conv2d(shortcut, block.shortcut, stride, 'SAME')
        h = shortcut + r
    h = tf.reduce_mean(bn_act(model.bn_out, h), [1, 2])
    return h @ model.dense_kernel + model.dense_bias


def test_forward_matches_the_architecture_written_out():
    model = models.WideResNet(6, 2, filters=8, repeat=2, scales=2, seed=4)
    rng = np.random.default_rng(0)
    for v in model.variables:  # non-trivial BN parameters and statistics, so that all of them matter
        if 'kernel' not in v.name:
            sign = 1 if 'variance' in v.name else rng.choice([-1, 1], v.shape)
            v.assign((rng.uniform(0.5, 1.5, v.shape) * sign).astype(np.float32))
    x = images([3, 9, 9, 2])
    np.testing.assert_allclose(model(x).numpy(), _reference_logits(model, x).numpy(), rtol=1e-4, atol=1e-4)


def test_same_seed_same_weights_other_seed_differs():
    a, b, c = tiny(seed=1), tiny(seed=1), tiny(seed=2)
    for va, vb in zip(a.variables, b.variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    differ = [not np.array_equal(va.numpy(), vc.numpy()) for va, vc in zip(a.variables, c.variables)]
    assert sum(differ) == len(a.kernels)  # every kernel differs; BN and bias start equal
    x = images([4, 8, 8, 3])
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    assert not np.allclose(a(x).numpy(), c(x).numpy())


def test_initial_kernel_scale():
    model = models.WideResNet(10, 3, filters=32, repeat=1, scales=2, seed=0)
    kernel = model.blocks[1].conv2  # 3x3, 64 -> 64
    std = (0.5 * 3 * 3 * 64) ** -0.5
    assert abs(np.std(kernel.numpy()) / std - 1) < 0.05
    assert abs(np.mean(kernel.numpy())) < 0.1 * std
    limit = 2 * (2.0 / (64 + 10)) ** 0.5 / 0.87962566103423978
    assert np.abs(model.dense_kernel.numpy()).max() <= limit + 1e-6
    np.testing.assert_array_equal(model.dense_bias.numpy(), 0)


def test_kernels_are_exactly_the_conv_and_dense_kernels():
    model = tiny(scales=2)
    kernels = {id(v) for v in model.kernels}
    expected = {id(v) for v in model.trainable_variables if len(v.shape) >= 2}
    assert kernels == expected and len(model.kernels) == len(kernels)
    assert all(v.name.endswith('kernel:0') for v in model.kernels)
    assert all(v.trainable for v in model.kernels)
    stats = model.batch_norm_stats
    assert all(not v.trainable and 'moving_' in v.name for v in stats)
    assert {id(v) for v in stats} == {id(v) for v in model.non_trainable_variables}


def test_batch_norm_statistics_update_rule():
    model = tiny()
    x = images([6, 8, 8, 3]) * 0.5 + 100  # pixels in [100, 228): batch means far from 0
    before = [v.numpy() for v in model.batch_norm_stats]
    model(x, training=True, update_stats=False)
    model(x, training=False)
    for b, v in zip(before, model.batch_norm_stats):
        np.testing.assert_array_equal(b, v.numpy())

    model(x, training=True, update_stats=True)
    # First batch norm: its input is the stem convolution of the scaled images.
    h = tf.nn.conv2d(x * 2 / 255 - 1, model.stem, 1, 'SAME').numpy().reshape(-1, 16)
    n = h.shape[0]
    bn = model.blocks[0].bn1
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.999 * 0 + 0.001 * h.mean(0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.999 * 1 + 0.001 * h.var(0) * n / (n - 1), rtol=1e-5)
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.batch_norm_stats))

    # A second update follows the rule from the new values.
    mean1 = bn.moving_mean.numpy()
    model(x, training=True)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.999 * mean1 + 0.001 * h.mean(0), rtol=1e-4, atol=1e-7)


def test_batch_norm_momentum_argument():
    model = tiny(bn_momentum=0.5)
    x = images([4, 8, 8, 3]) * 0.5
    model(x, training=True)
    h = tf.nn.conv2d(x * 2 / 255 - 1, model.stem, 1, 'SAME').numpy().reshape(-1, 16)
    np.testing.assert_allclose(model.blocks[0].bn1.moving_mean.numpy(), 0.5 * h.mean(0), rtol=1e-4, atol=1e-6)


def test_training_and_inference_modes_differ():
    model = tiny()
    x = images([8, 8, 8, 3])
    train = model(x, training=True, update_stats=False).numpy()
    infer = model(x, training=False).numpy()
    assert not np.allclose(train, infer, atol=1e-3)
    # Inference treats examples independently; training mode normalises with the batch.
    np.testing.assert_allclose(model(x[:2], training=False).numpy(), infer[:2], rtol=1e-4, atol=1e-5)
    assert not np.allclose(model(x[:2], training=True, update_stats=False).numpy(), train[:2], atol=1e-3)


def test_gradient_reaches_every_trainable_variable():
    model = tiny(scales=2)
    x = images([4, 8, 8, 3])
    labels = tf.constant([0, 1, 2, 3])

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            logits = model(x, training=True, update_stats=False)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        return tape.gradient(loss, model.trainable_variables)

    gs = grads()
    assert len(gs) == len(model.trainable_variables)
    for v, g in zip(model.trainable_variables, gs):
        assert g is not None, v.name
        assert g.shape == v.shape
        assert np.abs(g.numpy()).max() > 0, v.name


def test_checkpoint_round_trip(tmp_path):
    a, b = tiny(seed=1), tiny(seed=2)
    x = images([4, 8, 8, 3])
    a(x, training=True)
    path = tf.train.Checkpoint(model=a).save(str(tmp_path / 'ckpt'))
    tf.train.Checkpoint(model=b).restore(path).assert_consumed()
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


SYNC_BN_SCRIPT = textwrap.dedent('''
    import json
    import libml
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from libml import models

    # filters=8, not 4: on AVX2-only CPUs oneDNN (TF 2.21) computes a wrong filter gradient of a
    # 1x1 stride-2 conv with 4 input channels (relative error 0.33 against numpy; 8 or more: 1e-7).
    args = dict(nclass=5, channels=3, filters=8, repeat=1, scales=2, seed=3, bn_momentum=0.5)  # big stat steps
    x = tf.random.stateless_uniform([8, 8, 8, 3], [1, 2], 0, 255)
    w = tf.random.stateless_normal([8, 5], [3, 4])
    single = models.WideResNet(sync_batch_norm=True, **args)
    with tf.GradientTape() as tape:
        y_single = single(x, training=True)
        loss = tf.reduce_sum(y_single * w) / 8
    g_single = tape.gradient(loss, single.trainable_variables)

    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    out = {}
    for sync in (True, False):
        with strategy.scope():
            model = models.WideResNet(sync_batch_norm=sync, **args)
        halves = lambda t: strategy.experimental_distribute_values_from_function(
            lambda ctx: t[4 * ctx.replica_id_in_sync_group:4 * (ctx.replica_id_in_sync_group + 1)])

        @tf.function
        def step(xr, wr):
            with tf.GradientTape() as tape:
                y = model(xr, training=True)
                loss = tf.reduce_sum(y * wr) / 8
            return y, tape.gradient(loss, model.trainable_variables)

        y, g = strategy.run(step, args=(halves(x), halves(w)))
        y = tf.concat(strategy.experimental_local_results(y), 0)
        g = [strategy.reduce('SUM', gi, axis=None) for gi in g]
        stats = [max(float(np.abs(r.numpy() - s.numpy()).max()) for r in strategy.experimental_local_results(m))
                 for m, s in zip(model.batch_norm_stats, single.batch_norm_stats)]
        out[str(sync)] = dict(
            replicas=strategy.num_replicas_in_sync,
            logits=float(np.abs(y.numpy() - y_single.numpy()).max()),
            stats=max(stats),
            grads=max(float(np.abs(a.numpy() - b.numpy()).max() / (np.abs(b.numpy()).max() + 1e-12))
                      for a, b in zip(g, g_single)))
    print('RESULT ' + json.dumps(out))
''')


def test_sync_batch_norm_on_two_replicas_matches_one_device(tmp_path):
    script = tmp_path / 'sync_bn.py'
    script.write_text(SYNC_BN_SCRIPT)
    result = assert_ok(run_script(script, env={'PYTHONPATH': REPO}, timeout=300))
    out = json.loads(result.stdout.split('RESULT ')[1])
    synced, local = out['True'], out['False']
    assert synced['replicas'] == 2
    assert synced['logits'] < 1e-4, out
    assert synced['stats'] < 1e-5, out
    assert synced['grads'] < 1e-3, out
    # Without sync, each replica normalises with its own half batch: outputs and statistics differ.
    assert local['logits'] > 1e-3 and local['stats'] > 1e-5, out
