"""tf.distribute for the trainer: which strategy, and how its variables aggregate.

The training loop always runs under a strategy (the default one on one device), so several GPUs
(`--strategy=mirrored`) or machines (`--strategy=multiworker`, TF_CONFIG) are a flag.
"""
import json
import os

import tensorflow as tf

from libml.utils import UserError


def make_strategy(name):
    """The strategy of --strategy=`name`. For `multiworker`, call it before any TensorFlow op runs
    (TensorFlow configures its collective ops when the program starts)."""
    if name == 'mirrored':
        devices = tf.config.list_logical_devices('GPU') or tf.config.list_logical_devices('CPU')
        # Collective all-reduces issued from the batch-norm gradients and from the optimizer are
        # not ordered alike on every device, which aborts them on CPUs; reducing through one
        # device is ordered. GPUs keep NCCL.
        ops = None if devices[0].device_type == 'GPU' else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy([d.name for d in devices], cross_device_ops=ops)
    if name == 'multiworker':
        check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def check_tf_config():
    """A TF_CONFIG that MultiWorkerMirroredStrategy cannot use is a one-line error (without
    TF_CONFIG the strategy trains on this machine alone)."""
    text = os.environ.get('TF_CONFIG')
    if not text:
        return
    try:
        config = json.loads(text)
        workers = config['cluster']['worker']
        kind, index = config['task']['type'], int(config['task']['index'])
        known = len(workers) if kind == 'worker' else len(config['cluster'].get(kind, []))
        if not 0 <= index < known:
            raise ValueError(f'task {kind} {index} is not in the cluster')
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f'--strategy=multiworker: TF_CONFIG is not usable ({e!r}); expected '
                        '{"cluster": {"worker": ["host1:port", ...]}, "task": {"type": "worker", '
                        '"index": I}} (README, "Faster and wider training").') from None


def workers(strategy):
    """The number of worker processes that train together (1 unless multi-worker)."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None:
        return 1
    return max(sum(len(hosts) for kind, hosts in resolver.cluster_spec().as_dict().items()
                   if kind in ('chief', 'worker')), 1)


def is_chief(strategy):
    """Whether this process writes the run's files: the only process, the task of type `chief`,
    or worker 0 of a cluster without one (TensorFlow's convention)."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or workers(strategy) == 1:
        return True
    if resolver.task_type == 'chief':
        return True
    return (resolver.task_type == 'worker' and resolver.task_id == 0
            and 'chief' not in resolver.cluster_spec().as_dict())


def values_of_workers(strategy, value):
    """[the int `value` of each replica's worker], gathered from every worker (a collective: every
    worker must call it)."""
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda _: tf.constant([value], tf.int64))
    return [int(v) for v in strategy.gather(per_replica, axis=0).numpy()]


def first_replica_variables(next_creator, **kwargs):
    # Every replica computes the same update (gradients are all-reduced first), so a variable
    # assigned inside the replica function may take the first replica's value.
    kwargs['aggregation'] = tf.VariableAggregation.ONLY_FIRST_REPLICA
    return next_creator(**kwargs)
