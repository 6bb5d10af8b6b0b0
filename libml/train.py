"""The one trainer every algorithm uses.

An algorithm (realmix.py, the baselines) gives:
  name            run folder prefix, e.g. 'RealMix'
  nu              unlabelled views per example in a batch (0: supervised)
  args            dict of its hyper-parameters (they name the run folder)
  draw(seed, b)   optional: the random draws of one step for a batch of b (made in the input
                  pipeline, outside compiled code)
  loss(model, batch, images) -> (loss, {summary tag: scalar})   one replica's batch
The trainer owns everything else: the distribution strategy, the model and its EMA copy, Adam,
weight decay, the image clock, checkpoints, TensorBoard, evaluation, and the console.

Order of one update (docs/algorithm.md, "The update"): Adam; decoupled decay of conv/dense kernels,
w <- w * (1 - wd*lr); EMA of the trainable weights with decay min(ema, (1+t)/(10+t)) after t
updates (--ema_warmup, as tf.train.ExponentialMovingAverage(num_updates=t)).

The evaluated model is the EMA model. Its batch-norm statistics are set before every evaluation
and every checkpoint (--bn_stats): by default recomputed from a fixed set of training images
with the EMA weights themselves, so evaluation, checkpoints, inference and export all see one
model whose statistics match its weights, at any run length. `--noema_warmup --bn_stats=moving`
is the original's behaviour (plain EMA, the trained model's moving statistics copied).
"""
import dataclasses
import math
import os
import shutil

import numpy as np
import tensorflow as tf
from absl import flags
from sklearn import metrics as sklearn_metrics
from tqdm import tqdm

from libml import augment, data, images, inference, models, pipeline, runs
from libml.utils import UserError, read_json, write_json

FLAGS = flags.FLAGS

flags.DEFINE_string('train_dir', './experiments', 'Folder of the training runs.')
flags.DEFINE_string('dataset', None, 'Dataset NAME.SEED@SIZE-VALID (RealMix) or NAME-VALID '
                    '(baselines), e.g. cifar10.3@250-5000; its files must exist under $ML_DATA.')
flags.DEFINE_integer('batch', 64, 'Batch size (labelled examples per step).')
flags.DEFINE_float('lr', 0.002, 'Learning rate (Adam).')
flags.DEFINE_float('wd', 0.02, 'Decoupled weight decay of conv/dense kernels, applied as '
                   'w *= 1 - wd*lr after each step.')
flags.DEFINE_float('ema', 0.999, 'Exponential moving average decay of the evaluated weights.')
flags.DEFINE_bool('ema_warmup', True, 'Warm the EMA decay up as min(ema, (1+t)/(10+t)) after t '
                  'updates, so short runs are not dominated by the initial weights '
                  '(--noema_warmup: plain decay, as the original).')
flags.DEFINE_enum('bn_stats', 'recompute', ['recompute', 'debias', 'moving'],
                  'Batch-norm statistics of the evaluated (EMA) model, set before each evaluation '
                  'and checkpoint: recompute = from a fixed set of training images (up to '
                  '4096, un-augmented) with the EMA weights; debias = the trained model\'s moving '
                  'averages with their start-up bias removed; moving = those averages as they are '
                  '(the original).')
flags.DEFINE_integer('train_kimg', 1 << 16, 'Training duration in kibi-images (1024 images).')
flags.DEFINE_integer('report_kimg', 64, 'Evaluate and report every this many kibi-images.')
flags.DEFINE_integer('save_kimg', 64, 'Save a checkpoint every this many kibi-images.')
flags.DEFINE_integer('keep_ckpt', 50, 'Number of checkpoints to keep.')
flags.DEFINE_integer('epochs', 1024, 'Training stops after min(train_kimg, epochs*report_kimg) kimg.')
flags.DEFINE_string('augment', 'cifar10', 'Online augmentation: cifar10, svhn, stl10, color, '
                    'cutout or none (digits: svhn, they are not mirror-symmetric).')
flags.DEFINE_string('arch', 'resnet', 'Model architecture (resnet: the Wide-ResNet of MixMatch).')
flags.DEFINE_integer('filters', 32, 'Filter count of the first stage (doubles every stage).')
flags.DEFINE_integer('repeat', 4, 'Residual blocks per stage.')
flags.DEFINE_integer('scales', 0, 'Stages; 0 = ilog2(image size) - 2.')
flags.DEFINE_integer('nclass', 0, 'Class count; read from the data (a disagreeing value is an error).')
flags.DEFINE_integer('img_size', 0, 'Image size; read from the data (a disagreeing value is an error).')
flags.DEFINE_string('class_mapping', None, 'JSON {"0": "cat", ...} naming the classes for per-class '
                    'accuracy: a path or a file name in $ML_DATA. Default: the mapping written by '
                    'create_datasets.py.')
flags.DEFINE_bool('custom_dataset', False, 'Accepted for compatibility; no longer needed '
                  '(any dataset whose files exist works).')
flags.DEFINE_integer('label_size', 0, 'Accepted for compatibility; no longer needed.')
flags.DEFINE_integer('valid_size', 0, 'Accepted for compatibility; no longer needed (the '
                     'validation size is the -VALID part of --dataset).')
flags.DEFINE_integer('seed', 0, 'Seed of initialization, data order, augmentation and MixUp.')
flags.DEFINE_bool('deterministic', False, 'Deterministic ops: an interrupted and resumed run ends '
                  'with the same weights as an uninterrupted one (slower on GPUs).')
flags.DEFINE_enum('strategy', 'default', ['default', 'mirrored', 'multiworker'],
                  'tf.distribute strategy: default (one device), mirrored (all local GPUs), '
                  'multiworker (TF_CONFIG).')
flags.DEFINE_bool('sync_batch_norm', True, 'With several replicas, compute batch-norm '
                  'statistics over the global batch.')
flags.DEFINE_bool('jit_compile', False, 'Compile the training step with XLA (measure first: it '
                  'was slower for small images on CPUs).')
flags.DEFINE_integer('eval_batch', 256, 'Batch size of evaluation and inference.')
flags.DEFINE_bool('perform_inference', False, 'Predict --inference_dir with --inference_ckpt '
                  'instead of training.')
flags.DEFINE_string('inference_dir', None, 'Folder of images to predict (flat, or one sub-folder '
                    'per class to also get the accuracy).')
flags.DEFINE_string('inference_ckpt', None, 'Checkpoint RUN/tf/model.ckpt-NNNNNNNN, or a run folder '
                    '(its newest checkpoint).')
flags.DEFINE_string('train_record', None, 'Baselines: training records (path, or file name in '
                    '$ML_DATA); default NAME-train.tfrecord.')
flags.DEFINE_string('test_record', None, 'Baselines: test records (path, or file name in $ML_DATA); '
                    'default NAME-test.tfrecord.')
flags.DEFINE_string('inference_out', '.', 'Folder for {dataset}_pred.npy and {dataset}_pred.csv.')
flags.DEFINE_integer('max_image_pixels', images.MAX_IMAGE_PIXELS, 'Inference: images larger than '
                     'this many pixels (width x height) are skipped, from their header, before '
                     'decoding.', lower_bound=1)


# Images the EMA model's batch-norm statistics are recomputed from (--bn_stats=recompute).
BN_STATS_IMAGES = 4096


class NonFiniteLoss(UserError):
    """Training diverged; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------------------------
# Configuration.

@dataclasses.dataclass
class Config:
    train_dir: str = './experiments'
    batch: int = 64
    lr: float = 0.002
    wd: float = 0.02
    ema: float = 0.999
    ema_warmup: bool = True
    bn_stats: str = 'recompute'
    train_kimg: int = 1 << 16
    report_kimg: int = 64
    save_kimg: int = 64
    keep_ckpt: int = 50
    epochs: int = 1024
    augment: str = 'cifar10'
    arch: str = 'resnet'
    filters: int = 32
    repeat: int = 4
    scales: int = 0
    seed: int = 0
    deterministic: bool = False
    strategy: str = 'default'
    sync_batch_norm: bool = True
    jit_compile: bool = False
    eval_batch: int = 256

    @classmethod
    def from_flags(cls, flag_values):
        return cls(**{f.name: getattr(flag_values, f.name) for f in dataclasses.fields(cls)})

    def check(self):
        for name in ('batch', 'train_kimg', 'report_kimg', 'save_kimg', 'keep_ckpt', 'epochs',
                     'filters', 'repeat', 'eval_batch'):
            if getattr(self, name) < 1:
                raise UserError(f'--{name}={getattr(self, name)} must be at least 1.')
        if self.lr <= 0 or self.wd < 0 or not 0 <= self.ema < 1:
            raise UserError('--lr must be > 0, --wd >= 0 and --ema in [0, 1).')
        augment.check_preset(self.augment)

    @property
    def total_images(self):
        return min(self.train_kimg, self.epochs * self.report_kimg) << 10


def load_dataset(dataset_name, nclass=0, img_size=0, class_mapping=None, supervised=None):
    """The dataset of --dataset; `supervised` = (train_record, test_record) for the baselines."""
    if not dataset_name:
        raise UserError('--dataset is required, e.g. --dataset=cifar10.3@250-5000.')
    class_names = read_class_mapping(class_mapping) if class_mapping else None
    if supervised is not None:
        return pipeline.supervised_dataset(dataset_name, *supervised, nclass=nclass,
                                           img_size=img_size, class_names=class_names)
    return pipeline.ssl_dataset(dataset_name, nclass=nclass, img_size=img_size,
                                class_names=class_names)


def read_class_mapping(path):
    """--class_mapping: a path, or a bare file name found in $ML_DATA."""
    if not os.path.exists(path) and os.path.exists(os.path.join(data.ml_data(), path)):
        path = os.path.join(data.ml_data(), path)
    if not os.path.exists(path):
        raise UserError(f'--class_mapping={path}: no such file (looked here and in $ML_DATA).')
    return data.class_names_from_mapping(read_json(path, 'class mapping'), path)


# ----------------------------------------------------------------------------------------------
# Optimizer and checkpoints.

class Adam(tf.Module):
    """Adam (epsilon 1e-8) whose state is created up front, in the order of `variables`."""

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


# ----------------------------------------------------------------------------------------------
# Evaluation.

def classification_metrics(probs, labels, class_names=None, prefix='accuracy_test'):
    """Metrics of predictions `probs` [N, K] against `labels` [N], by summary tag.

    Precision, recall and F1, macro and weighted, from sklearn.metrics over the classes present
    in the labels or the predictions with zero_division=0 (as the original's f1_score(average=
    'macro')); and, when classes have names, `{prefix}/{name}`: the accuracy (percent) on the
    images of each class present in the labels, i.e. its recall.
    """
    pred = probs.argmax(1)
    metrics = {}
    for average in ('macro', 'weighted'):
        p, r, f, _ = sklearn_metrics.precision_recall_fscore_support(
            labels, pred, average=average, zero_division=0)
        metrics.update({f'precision/{average}': float(p), f'recall/{average}': float(r),
                        f'f1_score/{average}': float(f)})
    if class_names:
        present = np.unique(labels)
        _, recall, _, _ = sklearn_metrics.precision_recall_fscore_support(
            labels, pred, labels=present, average=None, zero_division=0)
        for c, value in zip(present, recall):
            metrics[f'{prefix}/{class_names[c]}'] = 100 * float(value)
    return metrics


# ----------------------------------------------------------------------------------------------
# The trainer.

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


def _first_replica_variables(next_creator, **kwargs):
    # Every replica computes the same update (gradients are all-reduced first), so a variable
    # assigned inside the replica function may take the first replica's value.
    kwargs['aggregation'] = tf.VariableAggregation.ONLY_FIRST_REPLICA
    return next_creator(**kwargs)


class Trainer:
    """Trains `algorithm` on `dataset` with `config` in run folder `run_dir`."""

    def __init__(self, algorithm, dataset, config, strategy=None):
        config.check()
        self.algorithm, self.dataset, self.config = algorithm, dataset, config
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.strategy = strategy or make_strategy(config.strategy)
        self.scales = config.scales or models.default_scales(min(dataset.height, dataset.width))
        self.args = dict(algorithm.args, arch=config.arch, batch=config.batch, filters=config.filters,
                         lr=config.lr, nclass=dataset.nclass, repeat=config.repeat,
                         scales=self.scales, wd=config.wd, ema=config.ema, augment=config.augment)
        if config.seed:
            self.args['seed'] = config.seed
        # Departures from the defaults name the run (the default runs keep their folder names).
        if not config.ema_warmup:
            self.args['ema_warmup'] = False
        if config.bn_stats != 'recompute':
            self.args['bn_stats'] = config.bn_stats
        self.run_dir = os.path.join(config.train_dir, dataset.name,
                                    runs.run_name(algorithm.name, self.args))
        self._build()

    # -- construction --------------------------------------------------------------------------
    def _build(self):
        cfg, ds = self.config, self.dataset
        sync = cfg.sync_batch_norm and self.strategy.num_replicas_in_sync > 1
        with self.strategy.scope(), tf.variable_creator_scope(_first_replica_variables):
            make = lambda: models.build_model(cfg.arch, ds.nclass, ds.channels, cfg.filters,
                                              cfg.repeat, self.scales, seed=cfg.seed,
                                              sync_batch_norm=sync)
            self.model = make()
            self.ema_model = make()
            self.optimizer = Adam(self.model.trainable_variables, cfg.lr)
            self.images = tf.Variable(0, dtype=tf.int64, trainable=False, name='images')
        self.checkpoint = tf.train.Checkpoint(model=self.model, ema_model=self.ema_model,
                                              optimizer=self.optimizer, images=self.images)
        self.checkpoints = runs.Checkpoints(os.path.join(self.run_dir, 'tf'), self.checkpoint,
                                       cfg.keep_ckpt)
        self._train_step = self._make_train_step()
        self._stats_updates = None  # the update at which the EMA model's statistics were set

    def _make_train_step(self):
        cfg, algorithm, strategy = self.config, self.algorithm, self.strategy
        model, ema_model, optimizer = self.model, self.ema_model, self.optimizer
        replicas = strategy.num_replicas_in_sync
        variables = model.trainable_variables
        kernels = model.kernels
        decay = 1 - cfg.wd * cfg.lr
        pairs = list(zip(model.trainable_variables, ema_model.trainable_variables))

        def replica_step(batch, images):
            with tf.GradientTape() as tape:
                loss, stats = algorithm.loss(model, batch, images)
                # Each replica's loss is a mean over its own slice of the batch; gradients are
                # summed across replicas, so divide to get the gradient of the global mean.
                scaled = loss / replicas
            grads = tape.gradient(scaled, variables)
            if replicas > 1:
                grads = tf.distribute.get_replica_context().all_reduce('sum', grads)
            optimizer.apply(grads, variables)
            for k in kernels:
                k.assign(k * decay)
            ema = cfg.ema
            if cfg.ema_warmup:  # t = updates so far, this one included
                t = tf.cast(optimizer.updates, tf.float32)
                ema = tf.minimum(ema, (1 + t) / (10 + t))
            for v, e in pairs:
                e.assign(ema * e + (1 - ema) * v)
            # The EMA model's batch-norm statistics are set by `refresh_ema_stats`, before each
            # evaluation and checkpoint, not here.
            stats = dict(stats)
            stats.setdefault('losses/overall', loss)
            return stats

        if cfg.jit_compile:
            # XLA compiles the replica's computation; without it the outer tf.function traces the
            # replica function once per replica, which collective ops (all-reduce) require.
            replica_step = tf.function(replica_step, jit_compile=True)

        @tf.function
        def train_step(batch, images):
            stats = strategy.run(replica_step, args=(batch, images))
            return {k: strategy.reduce('mean', v, axis=None) for k, v in stats.items()}

        return train_step

    def _batches(self, start):
        cfg, algo, ds = self.config, self.algorithm, self.dataset
        draw = getattr(algo, 'draw', None)
        total = self.strategy.num_replicas_in_sync
        if total == 1:
            return pipeline.train_batches(ds, cfg.batch, algo.nu, cfg.augment, cfg.seed, start,
                                          draw=draw)

        def make(context):
            # One input pipeline per worker; it yields the slices of its replicas in turn, and
            # tf.distribute hands consecutive elements to consecutive local replicas.
            local = total // context.num_input_pipelines
            first = context.input_pipeline_id * local
            return pipeline.train_batches(ds, cfg.batch, algo.nu, cfg.augment, cfg.seed, start,
                                          draw=draw, replicas=tuple(range(first, first + local)),
                                          num_replicas=total)

        return self.strategy.distribute_datasets_from_function(make)

    # -- evaluation ----------------------------------------------------------------------------
    def _eval_sets(self):
        ds, shape = self.dataset, self.dataset.shape
        sets = {'train_labeled': pipeline.load_arrays(ds.labelled, shape)}
        if ds.valid is not None:
            sets['valid'] = pipeline.load_arrays(ds.valid, shape)
        sets['test'] = pipeline.load_arrays(ds.test, shape)
        for name, (_, labels) in sets.items():
            if len(labels) and (labels.min() < 0 or labels.max() >= ds.nclass):
                path = {'train_labeled': ds.labelled, 'valid': ds.valid, 'test': ds.test}[name].path
                raise UserError(f'{path} has labels outside 0..{ds.nclass - 1} ({name} set); '
                                'is it the right file for this dataset?')
        return sets

    def _batch_norm_images(self, labeled):
        """The fixed training images the EMA model's batch-norm statistics are recomputed from.

        Up to BN_STATS_IMAGES un-augmented images: the labelled images (a sample seeded by
        --seed when there are more), then the first unlabelled training images (their file is
        class-interleaved, and an _aug file starts with the originals), never validation images.
        """
        cfg, ds = self.config, self.dataset
        order = np.random.RandomState(cfg.seed).permutation(len(labeled))[:BN_STATS_IMAGES]
        parts = [labeled[np.sort(order)]]
        room = BN_STATS_IMAGES - len(order)
        if room > 0 and ds.unlabelled is not None:
            parts.append(pipeline.load_arrays(ds.unlabelled, ds.shape, limit=room)[0])
        return np.concatenate(parts)

    def refresh_ema_stats(self):
        """Sets the EMA model's batch-norm statistics for its current weights (--bn_stats).

        Called before every evaluation and checkpoint, so what is evaluated is what is saved
        (and what inference and export load). Does nothing if already done at this update.
        """
        updates = int(self.optimizer.updates.numpy())
        if self._stats_updates == updates:
            return
        if self.config.bn_stats == 'recompute':
            models.recompute_batch_norm(self.ema_model, self._bn_images, self.config.eval_batch)
        else:
            # The trained model's moving averages m_t = momentum^t * m_0 + (1 - momentum^t) * avg
            # (one update per step, m_0 = 0 for means and 1 for variances); debias removes m_0.
            bias = self.model.bn_momentum ** updates if self.config.bn_stats == 'debias' else 0.0
            for bn, ema_bn in zip(self.model.batch_norms, self.ema_model.batch_norms):
                ema_bn.moving_mean.assign(bn.moving_mean.read_value() / (1 - bias))
                ema_bn.moving_variance.assign((bn.moving_variance.read_value() - bias) / (1 - bias))
        self._stats_updates = updates

    def save_checkpoint(self, images):
        self.refresh_ema_stats()
        return self.checkpoints.save(images)

    def evaluate(self, sets):
        """Accuracies (percent) of the EMA model and the extra metrics, by summary tag."""
        self.refresh_ema_stats()
        ds, results = self.dataset, {}
        for name, (pixels, labels) in sets.items():
            probs = inference.predict(self.ema_model, pixels, self.config.eval_batch)
            results[f'accuracy_{name}'] = 100 * float((probs.argmax(1) == labels).mean())
            if name == 'valid':
                picked = probs[np.arange(len(labels)), labels]
                results['losses/val_loss'] = float(-np.log(np.maximum(picked, 1e-12)).mean())
            if name == 'test':
                results.update(classification_metrics(probs, labels, ds.class_names))
        return results

    # -- the loop ------------------------------------------------------------------------------
    def save_args(self, extra):
        ds = self.dataset
        args = dict(self.args, dataset=ds.name, height=ds.height, width=ds.width,
                    channels=ds.channels, class_names=ds.class_names, algorithm=self.algorithm.name,
                    **extra)
        write_json(os.path.join(self.run_dir, 'args', 'args.json'), args)

    def restore(self):
        """Loads the newest complete checkpoint, if any; returns the images seen so far."""
        latest = self.checkpoints.latest()
        if latest:
            runs.check_readable(latest)
            try:
                self.checkpoint.read(latest).assert_consumed()
            except (AssertionError, ValueError, tf.errors.OpError) as e:
                raise UserError(f'cannot resume from {latest} ({str(e).splitlines()[0][:200]}); '
                                'it was written by another model or version. Use another '
                                '--train_dir or remove that run folder.') from None
            print(f'Resuming from {latest}')
        else:
            for v, e in zip(self.model.variables, self.ema_model.variables):
                e.assign(v)
        return int(self.images.numpy())

    def _check_streams(self):
        """Every training stream yields at least one example (else training would spin forever).

        Reads at most until the first example of each; a damaged file fails here, named."""
        parts = [('labeled', self.dataset.labelled)]
        if self.algorithm.nu:
            parts.append(('unlabeled', self.dataset.unlabelled))
        for what, part in parts:
            if what == 'unlabeled':  # the others are read whole for evaluation anyway
                pipeline.check_records(part.path)
            with pipeline.dataset_errors(part.path):
                empty = not list(pipeline.records(part, self.dataset.shape).take(1))
            if empty:
                kept = (f' once the records derived from the {part.exclude_below} validation '
                        'images are left out' if part.exclude_below else '')
                raise UserError(f'--dataset={self.dataset.name}: no {what} training images are '
                                f'left in {part.path}{kept}; use a smaller -VALID or another file.')

    def _training_files(self):
        parts = [self.dataset.labelled] + ([self.dataset.unlabelled] if self.algorithm.nu else [])
        return [p.path for p in parts]

    def _make_run_dir(self):
        """Creates the run folder; returns whether it was created here (see `train`)."""
        cfg = self.config
        existed = os.path.isdir(self.run_dir)
        try:
            os.makedirs(os.path.join(self.run_dir, 'tf'), exist_ok=True)
        except OSError as e:
            raise UserError(f'--train_dir={cfg.train_dir}: cannot create {self.run_dir} '
                            f'({e.strerror}); choose a folder you can write to.') from None
        if not os.access(self.run_dir, os.W_OK):
            raise UserError(f'--train_dir={cfg.train_dir}: {self.run_dir} is not writable.')
        return not existed

    def train(self, extra_args=None):
        """Trains until config.total_images, resuming from the newest checkpoint.

        Everything that can be checked is checked before the run folder is made; a run that
        fails before its first checkpoint removes the folder it made (no empty run folders).
        """
        self._check_streams()
        sets = self._eval_sets()
        self._bn_images = self._batch_norm_images(sets['train_labeled'][0])
        created = self._make_run_dir()
        try:
            with runs.RunLock(self.run_dir):
                return self._train(sets, extra_args or {})
        except BaseException:
            if created and not runs.complete_checkpoints(self.checkpoints.folder):
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise

    def _train(self, sets, extra_args):
        cfg = self.config
        # A labelled set smaller than the batch is normal (CIFAR-10 with 40 labels, batch 64):
        # the labelled stream repeats across epochs, so a batch may hold an image twice.
        self.save_args(extra_args)
        start = self.restore()
        total = cfg.total_images
        if start >= total:
            print(f'{self.run_dir}: already trained for {start >> 10} kimg (of {total >> 10}).')
            return
        writer = tf.summary.create_file_writer(os.path.join(self.run_dir, 'tf'))
        report, save = cfg.report_kimg << 10, cfg.save_kimg << 10
        batches = iter(self._batches(start))
        images = start
        print(f'Training {self.algorithm.name} on {self.dataset.name} '
              f'({self.dataset.height}x{self.dataset.width}x{self.dataset.channels}, '
              f'{self.dataset.nclass} classes) in {self.run_dir}')
        while images < total:
            period_end = min(total, (images // report + 1) * report)
            sums, steps = {}, 0
            with tqdm(total=period_end - images, unit='img', unit_scale=True, leave=False,
                      desc=f'kimg {images >> 10}-{period_end >> 10}', dynamic_ncols=True) as bar:
                while images < period_end:
                    with pipeline.dataset_errors(*self._training_files()):
                        batch = next(batches)
                    stats = self._train_step(batch, tf.constant(images, tf.float32))
                    stats = {k: float(v) for k, v in stats.items()}
                    if not all(math.isfinite(v) for v in stats.values()):
                        raise NonFiniteLoss(
                            f'the loss became non-finite at {images} images ({stats}); training '
                            f'stopped, the last good checkpoint is kept in {self.checkpoints.folder}. '
                            'Lower --lr or check the data.')
                    images += cfg.batch
                    self.images.assign(images)
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + v
                    steps += 1
                    bar.update(cfg.batch)
                    if images // save > (images - cfg.batch) // save and images < period_end:
                        self.save_checkpoint(images)
            results = self.evaluate(sets)
            with writer.as_default(step=images):
                for k, v in sums.items():
                    tf.summary.scalar(k, v / steps)
                for k, v in results.items():
                    tf.summary.scalar(k, v)
            writer.flush()
            if images // save > (images - cfg.batch) // save or images >= total:
                self.save_checkpoint(images)
            line = '  '.join(f'{results[f"accuracy_{n}"]:.2f}' if f'accuracy_{n}' in results
                             else '-' for n in ('train_labeled', 'valid', 'test'))
            tqdm.write(f'kimg {images >> 10:<6d} accuracy train/valid/test  {line}')
        writer.close()
        return results


# ----------------------------------------------------------------------------------------------
# Entry points shared by the algorithm files.

def train_from_flags(flag_values, make_algorithm, supervised=False):
    """Builds the dataset, the algorithm (make_algorithm(nclass)) and the trainer; trains."""
    fv = flag_values
    if fv.perform_inference:
        return inference_from_flags(fv)
    config = Config.from_flags(fv)
    config.check()
    records = (fv.train_record, fv.test_record) if supervised else None
    dataset = load_dataset(fv.dataset, fv.nclass, fv.img_size, fv.class_mapping, supervised=records)
    algorithm = make_algorithm(dataset.nclass)
    return Trainer(algorithm, dataset, config).train()


def supervised_main(flag_values, make_algorithm):
    return train_from_flags(flag_values, make_algorithm, supervised=True)


def inference_from_flags(flag_values):
    """--perform_inference: predict --inference_dir with --inference_ckpt; no training."""
    fv = flag_values
    if not fv.inference_dir or not fv.inference_ckpt:
        raise UserError('--perform_inference needs --inference_dir=FOLDER and '
                        '--inference_ckpt=RUN/tf/model.ckpt-NNNNNNNN (or a run folder).')
    return inference.run_inference(fv.inference_ckpt, fv.inference_dir, fv.inference_out,
                                   fv.dataset, fv.eval_batch, max_pixels=fv.max_image_pixels)
