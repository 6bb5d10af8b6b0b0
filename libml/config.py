"""The settings of a training run and the flags of every training script (realmix.py, the
baselines): each Config field is a flag with the field's default, so each default is set once.
"""
import dataclasses

from libml import images, names
from libml.options import define_flags, option
from libml.utils import UserError


@dataclasses.dataclass
class Config:
    """The trainer's settings: each field is a flag of every training script, with its default."""
    train_dir: str = option('./experiments', 'Folder of the training runs.')
    batch: int = option(64, 'Batch size (labeled examples per step, in total over all replicas '
                        'and workers).')
    optimizer: str = option('adam', 'adam (RealMix): Adam, with decoupled weight decay; sgd '
                            '(FixMatch): SGD with Nesterov momentum --momentum, with weight decay '
                            'as an L2 loss wd/2*|w|^2 of the kernels.', choices=['adam', 'sgd'])
    lr: float = option(0.002, 'Learning rate.')
    lr_schedule: str = option('constant', 'constant, or cosine: lr*cos(7*pi*t/(16*T)) after t of '
                              'T steps (FixMatch).', choices=['constant', 'cosine'])
    momentum: float = option(0.9, 'Momentum of --optimizer=sgd.')
    wd: float = option(0.02, 'Weight decay of conv/dense kernels: with adam applied after each '
                       'step as w *= 1 - wd*lr (decoupled), with sgd as an L2 loss.')
    ema: float = option(0.999, 'Exponential moving average decay of the evaluated weights.')
    ema_warmup: bool = option(True, 'Warm the EMA decay up as min(ema, (1+t)/(10+t)) after t '
                              'updates, so short runs are not dominated by the initial weights '
                              '(--noema_warmup: plain decay, as the original).')
    bn_stats: str = option('recompute', 'Batch-norm statistics of the evaluated (EMA) model, set '
                           'before each evaluation and checkpoint: recompute = from a fixed set of '
                           'training images (up to 4096, un-augmented) with the EMA weights; '
                           'debias = the trained model\'s moving averages with their start-up '
                           'bias removed; moving = those averages as they are (the original).',
                           choices=['recompute', 'debias', 'moving'])
    train_kimg: int = option(1 << 16, 'Training duration in kibi-images (1024 images).')
    report_kimg: int = option(64, 'Evaluate and report every this many kibi-images.')
    save_kimg: int = option(64, 'Save a checkpoint every this many kibi-images.')
    keep_ckpt: int = option(50, 'Number of checkpoints to keep.')
    epochs: int = option(1024, 'Training stops after min(train_kimg, epochs*report_kimg) kimg.')
    augment: str = option('cifar10', 'Online augmentation: cifar10, svhn, stl10, color, cutout or '
                          'none (digits: svhn, they are not mirror-symmetric).')
    arch: str = option('resnet', 'Model architecture (resnet: the Wide-ResNet of MixMatch).')
    filters: int = option(32, 'Filter count of the first stage (doubles every stage).')
    repeat: int = option(4, 'Residual blocks per stage.')
    scales: int = option(0, 'Stages; 0 = ilog2(image size) - 2.')
    seed: int = option(0, 'Seed of initialization, data order, augmentation and MixUp.')
    deterministic: bool = option(False, 'Deterministic ops: an interrupted and resumed run ends '
                                 'with the same weights as an uninterrupted one (slower on GPUs).')
    strategy: str = option('default', 'tf.distribute strategy: default (one device), mirrored '
                           '(all local GPUs), multiworker (one process per machine, each with '
                           'its TF_CONFIG; --train_dir shared by all).',
                           choices=['default', 'mirrored', 'multiworker'])
    sync_batch_norm: bool = option(True, 'With several replicas, compute batch-norm statistics '
                                   'over the global batch.')
    precision: str = option('float32', 'Type the model computes in: float32; bfloat16 (CPUs with '
                            'AVX-512 BF16 or AMX, GPUs since Ampere, TPUs); float16 (GPUs with '
                            'tensor cores; with dynamic loss scaling). Variables, optimizer, EMA, '
                            'batch-norm statistics, losses and evaluation stay float32.',
                            choices=['float32', 'bfloat16', 'float16'])
    jit_compile: bool = option(False, 'Compile the training step with XLA (measure first: it was '
                               'slower for small images on CPUs).')
    eval_batch: int = option(256, 'Batch size of evaluation and inference.')
    image_summaries: bool = option(True, 'TensorBoard images: the augmented training inputs at the '
                                   'start of a run, and at each evaluation the confusion matrix '
                                   'and the most confidently wrong test images '
                                   '(--noimage_summaries: none).')
    collapse_share: float = option(-1.0, 'Warn when one class takes more than this share of the '
                                   'guessed labels of the unlabeled batches for --collapse_reports '
                                   'reports in a row; -1 = halfway between an even share and one '
                                   'class (0.55 with 10 classes).')
    collapse_reports: int = option(3, 'See --collapse_share.')

    def check(self):
        for name in ('batch', 'train_kimg', 'report_kimg', 'save_kimg', 'keep_ckpt', 'epochs',
                     'filters', 'repeat', 'eval_batch', 'collapse_reports'):
            if getattr(self, name) < 1:
                raise UserError(f'--{name}={getattr(self, name)} must be at least 1.')
        if self.lr <= 0 or self.wd < 0 or not 0 <= self.ema < 1 or not 0 <= self.momentum < 1:
            raise UserError('--lr must be > 0, --wd >= 0, --ema and --momentum in [0, 1).')
        if self.collapse_share != -1 and not 0 < self.collapse_share <= 1:
            raise UserError(f'--collapse_share={self.collapse_share} must be in (0, 1], or -1 for '
                            'halfway between an even share and one class.')
        names.check_preset(self.augment)

    @property
    def total_nimg(self):
        return min(self.train_kimg, self.epochs * self.report_kimg) << 10


define_flags(Config)


@dataclasses.dataclass
class Data:
    """Which data a training script reads (flags), and the original's compatibility flags."""
    dataset: str = option(None, 'Dataset NAME.SEED@SIZE-VALID (RealMix) or NAME-VALID (baselines), '
                          'e.g. cifar10.3@250-5000; its files must exist under $ML_DATA.')
    nclass: int = option(0, 'Class count; read from the data (a disagreeing value is an error).')
    img_size: int = option(0, 'Image size; read from the data (a disagreeing value is an error).')
    class_mapping: str = option(None, 'JSON {"0": "cat", ...} naming the classes for per-class '
                                'accuracy: a path or a file name in $ML_DATA. Default: the mapping '
                                'written by create_datasets.py.')
    train_record: str = option(None, 'Baselines: training records (path, or file name in '
                               '$ML_DATA); default NAME-train.tfrecord.')
    test_record: str = option(None, 'Baselines: test records (path, or file name in $ML_DATA); '
                              'default NAME-test.tfrecord.')
    custom_dataset: bool = option(False, 'Accepted for compatibility; no longer needed (any '
                                  'dataset whose files exist works).')
    label_size: int = option(0, 'Accepted for compatibility; no longer needed.')
    valid_size: int = option(0, 'Accepted for compatibility; no longer needed (the validation '
                             'size is the -VALID part of --dataset).')


@dataclasses.dataclass
class Inference:
    """--perform_inference: predict a folder with a trained run instead of training (flags)."""
    perform_inference: bool = option(False, 'Predict --inference_dir with --inference_ckpt '
                                     'instead of training.')
    inference_dir: str = option(None, 'Folder of images to predict (flat, or one sub-folder per '
                                'class to also get the accuracy).')
    inference_ckpt: str = option(None, 'Checkpoint RUN/tf/model.ckpt-NNNNNNNN, a run folder '
                                 '(its newest checkpoint), or a folder written by '
                                 'scripts/export_model.py (its SavedModel).')
    inference_out: str = option('.', 'Folder for {dataset}_pred.npy and {dataset}_pred.csv.')
    max_image_pixels: int = option(images.MAX_IMAGE_PIXELS, 'Images larger than this many pixels '
                                   '(width x height) are skipped, from their header, before '
                                   'decoding.', lower_bound=1)


define_flags(Data)
define_flags(Inference)
