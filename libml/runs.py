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

import tensorflow as tf

from libml.utils import UserError, storage_errors


def run_name(algorithm_name, args):
    """RealMix_archresnet_batch64_...: sorted key+value, so the same command finds the same run."""
    return '_'.join([algorithm_name] + [f'{k}{v}' for k, v in sorted(args.items())])


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
            # TensorFlow's own writer of the state file (atomic), with relative names so a run
            # folder can be moved.
            tf.compat.v1.train.update_checkpoint_state(
                self.folder, os.path.basename(prefix), [os.path.basename(p) for p in kept])
        for path in old:
            for f in glob.glob(glob.escape(path) + '.*'):
                os.remove(f)
        return prefix


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
