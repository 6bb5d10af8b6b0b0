"""The run folder: its name, its checkpoints, and the lock of the process training in it.

    {train_dir}/{dataset}/{Algorithm}_{sorted key+value of its arguments}/
        args/args.json          the arguments (written by the trainer)
        tf/model.ckpt-NNNNNNNN  checkpoints, numbered by images seen (the newest --keep_ckpt)
        tf/checkpoint           TensorFlow's state file naming the newest
        tf/events.out.tfevents.*  TensorBoard summaries
        .lock                   held while a process trains in the folder
"""
import fcntl
import glob
import os
import re
import socket
import time
from collections import Counter

import numpy as np
import tensorflow as tf
from google.protobuf import text_format

from libml import images, models
from libml.utils import UserError
from libml.files import atomic_output, read_json, storage_errors, write_json

# What building a run's model needs from its args.json.
_REQUIRED_ARGS = ('arch', 'nclass', 'channels', 'filters', 'repeat', 'scales', 'height', 'width')
_CKPT_SUFFIX_RE = re.compile(r'\.(index|meta|data-\d+-of-\d+)$')


def run_name(algorithm_name, args):
    """RealMix_archresnet_batch64_...: sorted key+value, so the same command finds the same run."""
    return '_'.join([algorithm_name] + [f'{k}{v}' for k, v in sorted(args.items())])


def make_run_dir(run_dir, flag):
    """Creates `run_dir` (and its tf/); returns whether it was created here. A folder that cannot
    be made or written is a one-line error naming `flag` (e.g. '--train_dir=x')."""
    existed = os.path.isdir(run_dir)
    try:
        os.makedirs(os.path.join(run_dir, 'tf'), exist_ok=True)
    except OSError as e:
        raise UserError(f'{flag}: cannot create {run_dir} ({e.strerror}); choose a folder you can '
                        'write to.') from None
    if not os.access(run_dir, os.W_OK):
        raise UserError(f'{flag}: {run_dir} is not writable.')
    return not existed


def write_args(run_dir, args):
    """RUN/args/args.json: the run's arguments (what naming, inference and export need)."""
    write_json(os.path.join(run_dir, 'args', 'args.json'), args)


def check_readable(prefix):
    """Reads every tensor of checkpoint `prefix`: a damaged one is a one-line error naming it
    (before anything is restored or overwritten)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as e:
        raise UserError(f'checkpoint {prefix} cannot be read ({str(e).splitlines()[0][:120]}): its '
                        f'files are damaged. Move {prefix}.* out of the folder to resume from the '
                        'previous checkpoint.') from None


_CKPT_INDEX_RE = re.compile(r'^model\.ckpt-(\d+)\.index$')


def complete_checkpoints(folder):
    """[(number, prefix)] of the checkpoints of `folder` whose index and every data shard exist,
    by number. (A save writes its data under temporary names first and the index last.)"""
    found = []
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        m = _CKPT_INDEX_RE.match(name)
        if m:
            prefix = os.path.join(folder, name[:-len('.index')])
            shards = glob.glob(glob.escape(prefix) + '.data-*-of-*')
            if shards and len(shards) == int(shards[0].rsplit('-of-', 1)[1]):
                found.append((int(m.group(1)), prefix))
    return sorted(found)


def newest_checkpoint(folder, say=print):
    """The newest complete checkpoint of `folder`, or None.

    TensorFlow's state file (`checkpoint`) names it. When that file is unreadable, names a
    checkpoint that is missing or incomplete, or names an older one than the newest complete
    checkpoint on disk (a run stopped between the two writes), the newest by number is taken and
    `say` tells why: a damaged state file must never make a run start again from image 0.
    """
    on_disk = complete_checkpoints(folder)
    newest = on_disk[-1][1] if on_disk else None
    state_file = os.path.join(folder, 'checkpoint')
    if not os.path.exists(state_file):
        listed, problem = None, 'there is no state file'
    else:
        state = tf.train.get_checkpoint_state(folder)  # None if it cannot be parsed
        listed = os.path.normpath(state.model_checkpoint_path) if state else None
        problem = (f'{state_file} cannot be read' if state is None
                   else f'{state_file} names {listed}, which is incomplete or missing'
                   if listed not in [p for _, p in on_disk]
                   else f'{state_file} names {listed}, an older one')
    if newest is None or listed == newest:
        return newest
    say(f'note: {problem}; using the newest complete checkpoint, {newest}.')
    return newest


def _checkpoint_number(prefix):
    return int(prefix.rsplit('-', 1)[1])


class Checkpoints:
    """tf/model.ckpt-%08d (images seen), the newest `keep` kept, TF's `checkpoint` state file.

    Hand-written rather than tf.train.CheckpointManager, which numbers checkpoints without the
    zero padding the README's paths show. A checkpoint is listed in the state file only after
    it is completely written, so a run killed while saving resumes from the previous one; and a
    save never replaces a checkpoint that exists (one this run did not read).
    """

    def __init__(self, folder, checkpoint, keep):
        self.folder, self.checkpoint, self.keep = folder, checkpoint, keep

    def latest(self):
        return newest_checkpoint(self.folder)

    def save(self, images):
        prefix = os.path.join(self.folder, f'model.ckpt-{images:08d}')
        if os.path.exists(prefix + '.index'):
            raise UserError(f'{prefix} exists and was not read by this run; it is not '
                            'overwritten. Move it away, or resume from it.')
        os.makedirs(self.folder, exist_ok=True)
        with storage_errors(prefix):
            self.checkpoint.write(prefix)
            kept = [p for _, p in complete_checkpoints(self.folder)]
            old, kept = kept[:-self.keep], kept[-self.keep:]
            write_checkpoint_state(self.folder, prefix, kept)
        for path in old:
            for f in glob.glob(glob.escape(path) + '.*'):
                os.remove(f)
        return prefix


def write_checkpoint_state(folder, newest, kept):
    """Writes TensorFlow's `checkpoint` state file of `folder` atomically, with names relative to
    the folder so a run folder can be moved. TensorFlow's proto and text format, written here
    because tf.compat.v1.train.update_checkpoint_state prints a deprecation warning."""
    state = tf.compat.v1.train.generate_checkpoint_state_proto(
        folder, os.path.basename(newest), [os.path.basename(p) for p in kept])
    with atomic_output(os.path.join(folder, 'checkpoint')) as tmp:
        with open(tmp, 'w') as f:
            f.write(text_format.MessageToString(state))


class RunLock:
    """An exclusive lock on a run folder while a process trains in it (RUN/.lock).

    The kernel releases it when the process ends, however it ends (a lock left by a killed run
    is never stale). Its file holds the owner's pid and host, so a second trainer can name it.
    """

    def __init__(self, run_dir):
        self.path = os.path.join(run_dir, '.lock')
        self.file = None

    def __enter__(self):
        self.file = open(self.path, 'a+')
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            owner = self.file.read().strip() or 'another process'
            self.file.close()
            raise UserError(f'{os.path.dirname(self.path)} is in use by another training '
                            f'({owner}); wait for it to finish or stop it.') from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f'pid {os.getpid()} on {socket.gethostname()}, since '
                        f'{time.strftime("%Y-%m-%d %H:%M:%S")}\n')
        self.file.flush()
        return self

    def __exit__(self, *exc):
        self.file.close()  # releases the lock


# ----------------------------------------------------------------------------------------------
# Restoring the evaluated model of a run (inference, export).

def resolve_checkpoint(ckpt):
    """A checkpoint prefix, a run folder or its tf/ folder -> (checkpoint prefix, run folder).

    A folder gives its newest checkpoint. A prefix may be given with its `.index` or `.data-*`
    suffix. The run folder is the one that holds args/args.json (the parent of tf/).
    """
    path = os.path.normpath(os.path.abspath(os.path.expanduser(ckpt)))
    path = _CKPT_SUFFIX_RE.sub('', path)
    if os.path.isdir(path):
        tf_dir = os.path.join(path, 'tf') if os.path.isdir(os.path.join(path, 'tf')) else path
        prefix = newest_checkpoint(tf_dir)
        if not prefix:
            raise UserError(f'checkpoint folder {tf_dir} holds no checkpoint (model.ckpt-NNNNNNNN); '
                            'a run writes them there while it trains.')
    elif os.path.exists(path + '.index'):
        prefix = path
    else:
        folder = os.path.dirname(path)
        if not os.path.isdir(folder):
            raise UserError(f'checkpoint {path} does not exist (nor does its folder {folder}).')
        newest = newest_checkpoint(folder)
        hint = (f'the newest in {folder} is {os.path.basename(newest)}' if newest
                else f'{folder} holds no checkpoint')
        what = 'is not a checkpoint' if os.path.exists(path) else 'does not exist'
        raise UserError(f'checkpoint {path} {what}; {hint}.')
    tf_dir = os.path.dirname(prefix)
    for run_dir in (os.path.dirname(tf_dir), tf_dir):
        if os.path.exists(os.path.join(run_dir, 'args', 'args.json')):
            return prefix, run_dir
    raise UserError(f'no args/args.json beside checkpoint {prefix} (looked in '
                    f'{os.path.dirname(tf_dir)}): inference needs the arguments of the run '
                    '(architecture, image size, classes), which the trainer writes there.')


def read_args(run_dir, path=None):
    """args/args.json of a run (or the arguments file `path`, e.g. an export's copy), checked to
    hold what building its model needs."""
    path = path or os.path.join(run_dir, 'args', 'args.json')
    args = read_json(path, 'run arguments')
    missing = [k for k in _REQUIRED_ARGS if k not in args]
    if missing:
        raise UserError(f'{path} lacks {", ".join(missing)}: it was not written by this version '
                        'of the trainer.')
    if int(args['channels']) not in images.MODEL_CHANNELS:
        raise UserError(f'{path}: models of {args["channels"]} channels are not supported (1 or '
                        '3, what create_datasets.py writes).')
    return args


def describe(args):
    return (f'{args["arch"]} filters={args["filters"]} repeat={args["repeat"]} '
            f'scales={args["scales"]}, {args["height"]}x{args["width"]}x{args["channels"]} images, '
            f'{args["nclass"]} classes')


def restore_ema(prefix, args):
    """Builds the run's model and loads the EMA weights of checkpoint `prefix` into it."""
    model = models.build_model(args['arch'], int(args['nclass']), int(args['channels']),
                               int(args['filters']), int(args['repeat']), int(args['scales']), seed=0)
    try:
        stored = [(n, s) for n, s in tf.train.list_variables(prefix)
                  if n.startswith('ema_model/') and n.endswith('/.ATTRIBUTES/VARIABLE_VALUE')
                  and '/.OPTIMIZER_SLOT/' not in n]
    except (tf.errors.OpError, ValueError) as e:
        raise UserError(f'cannot read checkpoint {prefix} ({str(e).splitlines()[0][:200]}).') from None
    if not stored:
        raise UserError(f'checkpoint {prefix} holds no ema_model weights: it was not written by '
                        'this project\'s trainer.')
    expected = [tuple(v.shape.as_list()) for v in model.variables]
    found = [tuple(s) for _, s in stored]
    if Counter(expected) != Counter(found):
        total = lambda shapes: sum(int(np.prod(s)) for s in shapes)
        raise UserError(
            f'checkpoint {prefix} holds a model of another shape than its run\'s args.json '
            f'({describe(args)}: {len(expected)} variables, {total(expected)} weights; the '
            f'checkpoint: {len(found)} variables, {total(found)} weights). Shapes expected but '
            f'missing: {_shape_difference(expected, found)}; found instead: '
            f'{_shape_difference(found, expected)}.')
    try:
        status = tf.train.Checkpoint(ema_model=model).read(prefix)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise UserError(f'checkpoint {prefix} does not fit the model of its run\'s args.json '
                        f'({describe(args)}): {str(e).splitlines()[0][:200]}') from None
    return model


def _shape_difference(a, b, n=6):
    """The distinct shapes that `a` holds more often than `b`, in `a`'s order, as text."""
    more = Counter(a) - Counter(b)
    shapes = [s for s in dict.fromkeys(a) if more[s]]
    return ', '.join(str(list(s)) for s in shapes[:n]) + (' ...' if len(shapes) > n else '') or '-'


def restore_ema_model(ckpt):
    """The EMA model of a checkpoint: `ckpt` is RUN/tf/model.ckpt-NNNNNNNN, RUN/tf or RUN.

    Returns (model, args, prefix): the model built from RUN/args/args.json with the checkpoint's
    EMA weights, the run's arguments, and the checkpoint prefix used.
    """
    prefix, run_dir = resolve_checkpoint(ckpt)
    args = read_args(run_dir)
    return restore_ema(prefix, args), args, prefix
