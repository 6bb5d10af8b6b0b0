"""tf.distribute for the trainer: which strategy, and how its variables aggregate.

The training loop always runs under a strategy (the default one on one device), so several GPUs
(`--strategy=mirrored`) or machines (`--strategy=multiworker`, TF_CONFIG) are a flag.
"""
import tensorflow as tf


def make_strategy(name):
    if name == 'mirrored':
        devices = tf.config.list_logical_devices('GPU') or tf.config.list_logical_devices('CPU')
        # Collective all-reduces issued from the batch-norm gradients and from the optimizer are
        # not ordered alike on every device, which aborts them on CPUs; reducing through one
        # device is ordered. GPUs keep NCCL.
        ops = None if devices[0].device_type == 'GPU' else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy([d.name for d in devices], cross_device_ops=ops)
    if name == 'multiworker':
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def first_replica_variables(next_creator, **kwargs):
    # Every replica computes the same update (gradients are all-reduced first), so a variable
    # assigned inside the replica function may take the first replica's value.
    kwargs['aggregation'] = tf.VariableAggregation.ONLY_FIRST_REPLICA
    return next_creator(**kwargs)
