"""The one trainer every algorithm uses.

An algorithm (realmix.py, fixmatch.py, algorithms/*.py, the supervised baselines) keeps the
contract of libml/algorithm.py: a name, its unlabeled views per step `nu`, its hyper-parameters
`args`, and `loss(batch, step)`, with optional `uratio`, `views` and `draw`; the trainer checks it
at construction. The trainer owns everything else: the distribution strategy, the model and its
EMA copy, the optimizer (--optimizer), weight decay, the image clock, checkpoints, TensorBoard,
evaluation, and the console.

Order of one update (docs/algorithm.md, "The update"): the optimizer; with Adam, decoupled decay
of conv/dense kernels, w <- w * (1 - wd*lr); EMA of the trainable weights with decay
min(ema, (1+t)/(10+t)) after t updates (--ema_warmup, as
tf.train.ExponentialMovingAverage(num_updates=t)).

The evaluated model is the EMA model. Its batch-norm statistics are set before every evaluation
and every checkpoint (--bn_stats): by default recomputed from a fixed set of training images
with the EMA weights themselves, so evaluation, checkpoints, inference and export all see one
model whose statistics match its weights, at any run length. `--noema_warmup --bn_stats=moving`
is the original's behaviour (plain EMA, the trained model's moving statistics copied).
"""
import functools
import os
import shutil
import time

import numpy as np
import tensorflow as tf
from absl import flags
from tqdm import tqdm

from libml import algorithm as contract
from libml import (datasets, distribute, metrics, models, optimizers, pipeline, predict, runs,
                   summaries)
from libml.config import Config
from libml.options import define_flags, from_flags
from libml.utils import UserError, check_interrupted, no_extra_args, run


class NonFiniteLoss(UserError):
    """Training diverged; the last good checkpoint is kept."""


class Trainer:
    """Trains `algorithm` on `dataset` (a datasets.Dataset) with `config` in run folder `run_dir`."""

    def __init__(self, algorithm, dataset, config, strategy=None):
        config.check()
        contract.check(algorithm)
        self.algorithm, self.dataset, self.config = algorithm, dataset, config
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.strategy = strategy or distribute.make_strategy(config.strategy)
        # Of the workers of a multi-worker run, only the chief evaluates and writes the run folder.
        self.chief = distribute.is_chief(self.strategy)
        self.scales = config.scales or models.default_scales(min(dataset.height, dataset.width))
        self.args = dict(algorithm.args, arch=config.arch, batch=config.batch, filters=config.filters,
                         lr=config.lr, nclass=dataset.nclass, repeat=config.repeat,
                         scales=self.scales, wd=config.wd, ema=config.ema, augment=config.augment)
        if config.seed:
            self.args['seed'] = config.seed
        # Departures from these defaults name the run (the default runs keep their folder names).
        for key, default in (('ema_warmup', True), ('bn_stats', 'recompute'),
                             ('optimizer', 'adam'), ('lr_schedule', 'constant'),
                             ('precision', 'float32')):
            if getattr(config, key) != default:
                self.args[key] = getattr(config, key)
        if config.optimizer == 'sgd':
            self.args['momentum'] = config.momentum
        self.run_dir = os.path.join(config.train_dir, dataset.name,
                                    runs.run_name(algorithm.name, self.args))
        self._build()

    # -- construction --------------------------------------------------------------------------
    def _build(self):
        cfg, ds = self.config, self.dataset
        sync = cfg.sync_batch_norm and self.strategy.num_replicas_in_sync > 1
        with self.strategy.scope(), tf.variable_creator_scope(distribute.first_replica_variables):
            make = lambda dtype: models.build_model(cfg.arch, ds.nclass, ds.channels, cfg.filters,
                                                    cfg.repeat, self.scales, seed=cfg.seed,
                                                    sync_batch_norm=sync, compute_dtype=dtype)
            self.model = make(cfg.precision)
            self.ema_model = make('float32')  # what is evaluated, saved and exported: float32
            self.optimizer = optimizers.build(cfg.optimizer, self.model.trainable_variables,
                                              cfg.momentum)
            self.nimg = tf.Variable(0, dtype=tf.int64, trainable=False, name='images')
            self.loss_scale = optimizers.LossScale() if cfg.precision == 'float16' else None
        # Checkpoint keys are those of the first runs ('images' is the image clock), so every
        # run resumes.
        extra = dict(loss_scale=self.loss_scale) if self.loss_scale else {}
        self.checkpoint = tf.train.Checkpoint(model=self.model, ema_model=self.ema_model,
                                              optimizer=self.optimizer, images=self.nimg, **extra)
        self.checkpoints = runs.Checkpoints(os.path.join(self.run_dir, 'tf'), self.checkpoint,
                                            cfg.keep_ckpt)
        self._train_step = self._make_train_step()
        self._stats_updates = None  # the update at which the EMA model's statistics were set

    def _make_train_step(self):
        cfg, algorithm, strategy = self.config, self.algorithm, self.strategy
        model, ema_model, optimizer = self.model, self.ema_model, self.optimizer
        loss_scale = self.loss_scale
        replicas = strategy.num_replicas_in_sync
        variables = model.trainable_variables
        kernels = model.kernels
        total_updates = cfg.total_nimg // cfg.batch
        decoupled = cfg.optimizer == 'adam'  # sgd: weight decay is an L2 loss (FixMatch's)
        pairs = list(zip(model.trainable_variables, ema_model.trainable_variables))
        nclass = self.dataset.nclass

        def replica_step(batch, nimg):
            lr = optimizers.learning_rate(cfg.lr, cfg.lr_schedule, optimizer.updates, total_updates)
            step = contract.Step(model, ema_model, nimg, tf.minimum(nimg / cfg.total_nimg, 1.0))
            with tf.GradientTape() as tape:
                loss, stats = algorithm.loss(batch, step)
                total = loss
                if not decoupled:
                    total += cfg.wd * tf.add_n([tf.nn.l2_loss(k) for k in kernels])
                # Each replica's loss is a mean over its own slice of the batch; gradients are
                # summed across replicas, so divide to get the gradient of the global mean.
                scaled = total / replicas
                if loss_scale:
                    scaled *= loss_scale.scale
            grads = tape.gradient(scaled, variables)
            if replicas > 1:
                grads = tf.distribute.get_replica_context().all_reduce('sum', grads)
            stats = dict(stats)
            stats.update(summaries.collapse_tensors(stats, nclass, batch.get('u_label')))
            stats.setdefault('losses/overall', loss)
            if not loss_scale:
                update(grads, lr)
                return stats
            grads = [g / loss_scale.scale for g in grads]
            # The same decision on every replica: the gradients were all-reduced first.
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
            stats['monitors/loss_scale'] = tf.identity(loss_scale.scale)
            stats['monitors/skipped_steps'] = 1 - tf.cast(finite, tf.float32)
            loss_scale.update(finite)
            tf.cond(finite, lambda: update(grads, lr), lambda: None)  # skip a non-finite step
            return stats

        def update(grads, lr):
            optimizer.apply(grads, variables, lr)
            if decoupled:
                # A constant rate keeps the factor a Python float, exactly as the first runs had it.
                decay = 1 - cfg.wd * (cfg.lr if cfg.lr_schedule == 'constant' else lr)
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

        if cfg.jit_compile:
            # XLA compiles the replica's computation; without it the outer tf.function traces the
            # replica function once per replica, which collective ops (all-reduce) require.
            replica_step = tf.function(replica_step, jit_compile=True)

        # AutoGraph off: the step is plain tensor code (Python control flow only on Python
        # values; tf.cond where a tensor decides), and converting it cost seconds of every start.
        @tf.function(autograph=False)
        def train_step(batch, nimg):
            stats = strategy.run(replica_step, args=(batch, nimg))
            return {k: strategy.reduce('mean', v, axis=None) for k, v in stats.items()}

        return train_step

    def _batches(self, start):
        cfg, algo, ds = self.config, self.algorithm, self.dataset
        total = self.strategy.num_replicas_in_sync
        if total == 1:
            return pipeline.train_batches(ds, cfg.batch, algo.nu, cfg.augment, cfg.seed, start,
                                          **self._input_options())
        return self.strategy.distribute_datasets_from_function(
            lambda context: self._worker_batches(start, context))

    def _input_options(self):
        """The algorithm's optional input settings: its MixUp draws; unlabeled images per labeled
        one; each unlabeled view 'weak' or 'strong' (FixMatch)."""
        algo = self.algorithm
        return dict(draw=getattr(algo, 'draw', None), uratio=getattr(algo, 'uratio', 1),
                    views=getattr(algo, 'views', None))

    def _worker_batches(self, start, context):
        """The input pipeline of one worker (`context`: its tf.distribute.InputContext): the
        slices of the global batch for its replicas, in turn (tf.distribute hands consecutive
        elements to consecutive local replicas), so every worker trains on other examples and
        all together on exactly the examples of a one-device run."""
        cfg, algo = self.config, self.algorithm
        total = context.num_replicas_in_sync
        local = total // context.num_input_pipelines
        first = context.input_pipeline_id * local
        return pipeline.train_batches(self.dataset, cfg.batch, algo.nu, cfg.augment, cfg.seed,
                                      start, replicas=tuple(range(first, first + local)),
                                      num_replicas=total, **self._input_options())

    # -- the evaluated model ---------------------------------------------------------------------
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

    def save_checkpoint(self, nimg):
        self.refresh_ema_stats()
        return self.checkpoints.save(nimg)

    def evaluate(self, sets, predictions=None):
        """Accuracies (percent) of the EMA model and the extra metrics, by summary tag;
        `predictions` (a dict) receives each set's probabilities."""
        self.refresh_ema_stats()
        return metrics.evaluate(self.ema_model, sets, self.dataset.class_names,
                                self.config.eval_batch, predictions)

    # -- before training -------------------------------------------------------------------------
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
        return int(self.nimg.numpy())

    def _training_parts(self):
        ds = self.dataset
        return [('labeled', ds.labeled)] + ([('unlabeled', ds.unlabeled)] if self.algorithm.nu else [])

    def _check_streams(self):
        """Every training stream yields an example (else training would spin forever)."""
        for what, part in self._training_parts():
            pipeline.check_stream(part, self.dataset.shape, what, self.dataset.name,
                                  whole_file=(what == 'unlabeled'))  # the others are read whole

    # -- the loop ------------------------------------------------------------------------------
    def train(self, extra_args=None):
        """Trains until config.total_nimg, resuming from the newest checkpoint.

        Everything that can be checked is checked before the run folder is made; a run that
        fails before its first checkpoint removes the folder it made (no empty run folders).
        """
        self._check_streams()
        if not self.chief:
            # Another worker of a multi-worker run: it trains in step with the chief, which alone
            # evaluates and writes (checkpoints, summaries, args.json); it writes nothing.
            return self._train(None, extra_args or {})
        sets = self.dataset.eval_sets()
        self._bn_images = self.dataset.batch_norm_images(sets['train_labeled'][0], self.config.seed)
        created = runs.make_run_dir(self.run_dir, '--train_dir=' + self.config.train_dir)
        try:
            with runs.RunLock(self.run_dir):
                return self._train(sets, extra_args or {})
        except BaseException:
            if created and not runs.complete_checkpoints(self.checkpoints.folder):
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise

    def _train(self, sets, extra_args):
        cfg, ds = self.config, self.dataset
        # A labeled set smaller than the batch is normal (CIFAR-10 with 40 labels, batch 64):
        # the labeled stream repeats across epochs, so a batch may hold an image twice.
        if self.chief:
            runs.write_args(self.run_dir, dict(
                self.args, dataset=ds.name, height=ds.height, width=ds.width, channels=ds.channels,
                class_names=ds.class_names, algorithm=self.algorithm.name, **extra_args))
        start = self.restore()
        if distribute.workers(self.strategy) > 1:
            starts = distribute.values_of_workers(self.strategy, start)
            if len(set(starts)) > 1:
                raise UserError(f'the workers resumed from different checkpoints (images seen: '
                                f'{starts}): --train_dir={cfg.train_dir} must be one folder that '
                                'every worker reads (a shared file system).')
        total = cfg.total_nimg
        if start >= total:
            print(f'{self.run_dir}: already trained for {start >> 10} kimg (of {total >> 10}).')
            return
        writer = self.chief and tf.summary.create_file_writer(os.path.join(self.run_dir, 'tf'))
        hparams = self.chief and summaries.HParamsLog(
            self.run_dir, self._hparams(), f'{os.path.basename(self.run_dir)} ({ds.name})')
        share = cfg.collapse_share if cfg.collapse_share != -1 else \
            summaries.default_collapse_share(ds.nclass)
        watch = summaries.CollapseWatch(share, cfg.collapse_reports, ds.class_names)
        report, save = cfg.report_kimg << 10, cfg.save_kimg << 10
        batches = iter(self._batches(start))
        training_files = [part.path for _, part in self._training_parts()]
        nimg, results = start, None
        print(f'Training {self.algorithm.name} on {ds.name} ({ds.height}x{ds.width}x{ds.channels}, '
              f'{ds.nclass} classes) in {self.run_dir}')
        while nimg < total:
            period_end = min(total, (nimg // report + 1) * report)
            sums, steps = {}, 0
            # This process's time on the period (training and evaluation): summed over the
            # periods it gives a run's cost in hours without the gaps between resumed sessions.
            wall, cpu = time.perf_counter(), time.process_time()
            with tqdm(total=period_end - nimg, unit='img', unit_scale=True, leave=False,
                      desc=f'kimg {nimg >> 10}-{period_end >> 10}', dynamic_ncols=True) as bar:
                while nimg < period_end:
                    check_interrupted()  # Ctrl-C stops between steps (libml/utils.py)
                    with pipeline.dataset_errors(*training_files):
                        batch = next(batches)
                    if nimg == 0 and writer and cfg.image_summaries:  # a new run, not a resumed one
                        self._write_inputs(writer, batch)
                    stats = self._train_step(batch, tf.constant(nimg, tf.float32))
                    stats = {k: v.numpy() for k, v in stats.items()}
                    if not all(np.isfinite(v).all() for v in stats.values()):
                        raise NonFiniteLoss(
                            f'the loss became non-finite at {nimg} images ({stats}); training '
                            f'stopped, the last good checkpoint is kept in {self.checkpoints.folder}. '
                            'Lower --lr or check the data.')
                    nimg += cfg.batch
                    self.nimg.assign(nimg)
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + v
                    steps += 1
                    bar.update(cfg.batch)
                    if (nimg // save > (nimg - cfg.batch) // save and nimg < period_end
                            and self.chief):
                        self.save_checkpoint(nimg)
            if not self.chief:
                continue
            predictions = {}
            results = self.evaluate(sets, predictions)
            with writer.as_default(step=nimg):
                warning = self._write_report({k: v / steps for k, v in sums.items()}, results,
                                             sets['test'], predictions['test'], watch)
                tf.summary.scalar('monitors/period_seconds', time.perf_counter() - wall)
                tf.summary.scalar('monitors/period_cpu_seconds', time.process_time() - cpu)
            writer.flush()
            hparams.write(results, nimg)
            if nimg // save > (nimg - cfg.batch) // save or nimg >= total:
                self.save_checkpoint(nimg)
            line = '  '.join(f'{results[f"accuracy_{n}"]:.2f}' if f'accuracy_{n}' in results
                             else '-' for n in ('train_labeled', 'valid', 'test'))
            tqdm.write(f'kimg {nimg >> 10:<6d} accuracy train/valid/test  {line}')
            if warning:
                tqdm.write(warning)
        if writer:
            writer.close()
            hparams.close()
        return results

    # -- TensorBoard ---------------------------------------------------------------------------
    def _hparams(self):
        """What the HParams dashboard shows of this run: its named settings and a few more."""
        cfg = self.config
        return dict(self.args, algorithm=self.algorithm.name, dataset=self.dataset.name,
                    train_kimg=cfg.total_nimg >> 10, seed=cfg.seed, optimizer=cfg.optimizer,
                    lr_schedule=cfg.lr_schedule, precision=cfg.precision)

    def _write_inputs(self, writer, batch):
        """inputs/*: the first step's images (one replica's share), as the model receives them."""
        local = self.strategy.experimental_local_results(batch)[0]
        views = getattr(self.algorithm, 'views', None) or ('weak',) * self.algorithm.nu
        with writer.as_default(step=0):
            summaries.write_inputs({k: v.numpy() for k, v in local.items()
                                    if k in ('x', 'u')}, views)

    def _write_report(self, means, results, test_set, test_probs, watch):
        """The scalars of one report (period means of the step's summaries, the evaluation), the
        collapse monitors and the evaluation images; returns a collapse warning or None."""
        counts = means.pop(summaries.CLASS_COUNTS, None)
        summaries.write_ood(means)
        for k, v in {**means, **results}.items():
            tf.summary.scalar(k, float(v))
        warning = None
        if counts is not None:
            warning = watch.update(summaries.write_collapse(counts))
        if self.config.image_summaries:
            summaries.write_evaluation_images(test_set[0], test_set[1], test_probs,
                                              self.dataset.class_names)
        return warning


# ----------------------------------------------------------------------------------------------
# Entry points shared by the algorithm files.

def dataset_from_flags(flag_values, supervised=False):
    fv = flag_values
    records = (fv.train_record, fv.test_record) if supervised else None
    return datasets.resolve(fv.dataset, records, fv.nclass, fv.img_size, fv.class_mapping)


def train_from_flags(flag_values, make_algorithm, supervised=False, settings=None):
    """--perform_inference, or: the dataset, the algorithm, the trainer. make_algorithm(nclass),
    or make_algorithm(nclass, hyper) with `settings` (the algorithm's Hyper dataclass): the
    hyper-parameters are read from the flags, and so checked, before any data is read."""
    fv = flag_values
    if fv.perform_inference:
        if not fv.inference_dir or not fv.inference_ckpt:
            raise UserError('--perform_inference needs --inference_dir=FOLDER and '
                            '--inference_ckpt=RUN/tf/model.ckpt-NNNNNNNN (or a run folder, or an '
                            'exported SavedModel folder).')
        return predict.run_inference(fv.inference_ckpt, fv.inference_dir, fv.inference_out,
                                     fv.dataset, fv.eval_batch, max_pixels=fv.max_image_pixels)
    config = from_flags(Config, fv)
    config.check()
    if settings is not None:
        hyper = from_flags(settings, fv)
        make_algorithm = functools.partial(make_algorithm, hyper=hyper)
    # Made before any TensorFlow op runs: a multi-worker strategy configures collective ops then.
    strategy = distribute.make_strategy(config.strategy)
    dataset = dataset_from_flags(fv, supervised)
    return Trainer(make_algorithm(dataset.nclass), dataset, config, strategy).train()


def main(make_algorithm, settings=None, supervised=False, trainer_defaults=None):
    """Runs a training script: parses its flags, then trains (or predicts, with
    --perform_inference). make_algorithm(nclass[, hyper=settings read from the flags]) is called
    once the flags are parsed; the flags of `settings` are defined here. trainer_defaults:
    {Config flag: this script's default}, e.g. the optimizer of the algorithm's paper (set here,
    so importing a script leaves them alone)."""
    if settings is not None:
        define_flags(settings)  # here, not at import: methods may share flag names (--wu, --T)
    for name, value in (trainer_defaults or {}).items():
        flags.FLAGS.set_default(name, value)

    def run_main(argv):
        no_extra_args(argv)
        train_from_flags(flags.FLAGS, make_algorithm, supervised, settings)
    run(run_main)
