"""One stream of ids -> tf.data windows of (inputs, targets).

The stream is BOS tune EOS BOS tune EOS ... (`tune_split.encode_stream`, or an encoded corpus's);
a window may span the end of one tune and the start of the next, which teaches the model where
tunes stop and start. With `DataConfig.whole_tunes`, `make_tune_dataset` instead cuts training
windows that start at a tune's BOS and hold it whole, padded with PAD, in batches of tunes of
similar length.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from musicgen.data.tune_split import tune_start_positions
from musicgen.data.vocab import PAD
from musicgen.errors import CorpusError
from musicgen.tfsetup import import_tensorflow

tf = import_tensorflow()


def require_windows(length: int, seq_length: int) -> None:
    """Checks that a stream of `length` ids holds at least one window of `seq_length` + 1 ids.

    Raises:
        CorpusError: it does not.
    """
    if seq_length < 1:
        raise ValueError("seq_length must be positive")
    if length < seq_length + 1:
        raise CorpusError(
            f"only {length} characters of tunes; need at least seq_length+1 = {seq_length + 1} "
            "to make one training window: use a smaller --seq-length or more tunes"
        )


def make_dataset(
    ids: np.ndarray,
    seq_length: int,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    repeat: bool = False,
    drop_remainder: bool | None = None,
    tune_starts: np.ndarray | None = None,
    skip: int = 0,
    shard: Shard | None = None,
):
    """Cuts an id stream into (inputs, targets) windows, targets being inputs shifted by one.

    Windows start every `seq_length` ids and hold `seq_length + 1` ids, so together they cover the
    stream once. When shuffling, each pass ("epoch") starts at its own random offset, so window
    boundaries move between epochs, and visits the windows in its own random order; both are drawn
    from (seed, epoch) and so are reproducible. Batches may span two epochs.

    Args:
        ids: 1-D int stream from `tune_split.encode_stream`.
        seq_length: ids per input window.
        batch_size: windows per batch.
        shuffle: random offsets and order (training) or the stream in order (evaluation).
        seed: seeds the offsets and order.
        repeat: loop over the stream forever.
        drop_remainder: drop a last short batch; defaults to `shuffle`.
        tune_starts: when shuffling, positions (the BOS of each tune, see `tune_start_positions`)
            where one extra window per pass also starts. Every window begins with a zero state,
            and generation begins a tune with a zero state and BOS: without these windows the
            model would rarely see that, and would start tunes badly.
        skip: batches to leave out at the start: those a resumed run has already trained on.
        shard: this input pipeline's part of every batch, for `tf.distribute` (see Shard); None
            for the whole batch.

    Returns:
        A `tf.data.Dataset` of (inputs, targets), each int32 (batch, seq_length), or
        (shard.replica_batch, seq_length) with a shard.

    Raises:
        CorpusError: the stream is shorter than one window.
    """
    if not isinstance(ids, np.memmap):
        ids = np.asarray(ids, dtype=np.int32)
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    require_windows(len(ids), seq_length)
    epochs = tf.data.Dataset.range(2**62 if repeat else 1)
    aligned = _usable_starts(tune_starts, len(ids), seq_length) if shuffle else None
    starts = epochs.flat_map(
        lambda epoch: _window_starts(len(ids), seq_length, shuffle, seed, epoch, aligned)
    )
    if drop_remainder is None:
        drop_remainder = shuffle
    batches = starts.batch(batch_size, drop_remainder=drop_remainder).skip(skip)
    if shard is not None:
        batches = batches.map(shard.cut).unbatch()  # (replica_batch,) starts each
    gather = _window_reader(ids, seq_length)
    batches = batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class Shard:
    """One input pipeline's part of each global batch, cut into per-replica batches.

    Every pipeline draws the same window starts from the same seed and keeps its own slice of each
    batch, so together the pipelines (one per worker) read exactly the batches a single device
    would, and a worker gathers only its own windows.

    Attributes:
        pipeline: this pipeline's index, in [0, pipelines).
        pipelines: input pipelines taking part (one per worker).
        replicas: replicas this pipeline feeds, one per-replica batch each, in turn.
        replica_batch: windows in each per-replica batch.
    """

    pipeline: int
    pipelines: int
    replicas: int
    replica_batch: int

    @classmethod
    def from_context(cls, context, global_batch: int) -> Shard:
        """The shard a `tf.distribute.InputContext` asks for, for `global_batch` windows."""
        pipelines = context.num_input_pipelines
        return cls(
            pipeline=context.input_pipeline_id,
            pipelines=pipelines,
            replicas=context.num_replicas_in_sync // pipelines,
            replica_batch=context.get_per_replica_batch_size(global_batch),
        )

    def cut(self, starts):
        """(global batch,) starts -> (replicas, replica_batch): this pipeline's slice."""
        size = self.replicas * self.replica_batch
        mine = starts[self.pipeline * size : (self.pipeline + 1) * size]
        return tf.reshape(mine, [self.replicas, self.replica_batch])


def _usable_starts(tune_starts, length: int, seq_length: int):
    """The tune starts that leave room for a whole window, as an int64 tensor (or None)."""
    if tune_starts is None:
        return None
    starts = np.asarray(tune_starts, dtype=np.int64)
    return tf.constant(starts[starts + seq_length + 1 <= length])


def _window_starts(length: int, seq_length: int, shuffle: bool, seed: int, epoch, aligned=None):
    """Dataset of the start index of every window in one pass over a stream of `length` ids."""
    if shuffle:
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        # The offset keeps at least one whole window of seq_length + 1 ids in the stream.
        max_offset = min(seq_length, length - seq_length)
        offset = tf.random.stateless_uniform(
            [], seed=epoch_seed, minval=0, maxval=max_offset, dtype=tf.int64
        )
    else:
        offset = tf.constant(0, tf.int64)
    count = (length - 1 - offset) // seq_length
    starts = offset + tf.range(count, dtype=tf.int64) * seq_length  # (windows,)
    if aligned is not None:
        starts = tf.concat([starts, aligned], axis=0)
    if shuffle:
        starts = tf.random.experimental.stateless_shuffle(starts, seed=epoch_seed + 1)
    return tf.data.Dataset.from_tensor_slices(starts)


def _window_reader(ids: np.ndarray, seq_length: int):
    """A function from (batch,) start indices to (inputs, targets), each int32 (batch, seq_length).

    An in-memory stream becomes one constant tensor. A memory-mapped one (a large corpus from the
    on-disk cache) stays on disk: each batch reads only its own windows, so memory holds no more
    of the corpus than the pages in use.
    """
    offsets = np.arange(seq_length + 1, dtype=np.int64)
    if isinstance(ids, np.memmap):

        def read(starts: np.ndarray) -> np.ndarray:
            return np.asarray(ids[starts[:, None] + offsets[None, :]], dtype=np.int32)

        def gather(starts):
            windows = tf.numpy_function(read, [starts], tf.int32, stateful=False)
            windows = tf.ensure_shape(windows, [None, seq_length + 1])
            return windows[:, :-1], windows[:, 1:]

        return gather
    stream = tf.constant(ids)  # (n,)

    def gather(starts):
        windows = tf.gather(stream, starts[:, None] + offsets[None, :])  # (batch, seq_length + 1)
        return windows[:, :-1], windows[:, 1:]

    return gather


# ------------------------------------------------------------------------------------------------
# Whole-tune windows (DataConfig.whole_tunes)

BATCHES_PER_LENGTH_GROUP = 16  # batches whose tunes are sorted by length together


def tune_pieces(tune_starts: np.ndarray, length: int, seq_length: int):
    """Each tune of a stream cut into windows that start at its BOS: (starts, lengths), int64.

    A tune of up to `seq_length` + 1 ids (BOS tune EOS) is one piece, held whole; a longer one
    continues in further pieces, each starting where the previous one's inputs ended, so every id
    after a BOS is a target exactly once per pass. A piece never runs into the next tune.

    Args:
        tune_starts: the position of each tune's BOS (`tune_start_positions`), ascending.
        length: ids in the stream.
        seq_length: inputs per window; a piece holds up to `seq_length` + 1 ids.
    """
    starts = np.asarray(tune_starts, dtype=np.int64)
    ends = np.append(starts[1:], length).astype(np.int64)
    counts = np.maximum(1, -(-(ends - starts - 1) // seq_length))  # ceil, targets per tune
    first = np.repeat(starts, counts)
    within = np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    piece_starts = first + within * seq_length
    piece_lengths = np.minimum(seq_length + 1, np.repeat(ends, counts) - piece_starts)
    keep = piece_lengths >= 2  # at least one (input, target) pair
    return piece_starts[keep], piece_lengths[keep]


def bucket_widths(seq_length: int, buckets: int) -> np.ndarray:
    """The window widths of `buckets` length buckets: equal steps up to `seq_length`."""
    step = -(-seq_length // buckets)
    return np.unique(np.minimum(seq_length, step * np.arange(1, buckets + 1)))


def _sort_within_groups(order: np.ndarray, lengths: np.ndarray, group: int) -> None:
    """Sorts `order` (indices into `lengths`) by length within each run of `group`, in place."""
    for lo in range(0, len(order), group):
        chunk = order[lo : lo + group]
        order[lo : lo + group] = chunk[np.argsort(lengths[chunk], kind="stable")]


def whole_tune_batches(lengths: np.ndarray, batch_size: int, seq_length: int, buckets: int,
                       seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One pass's batches of pieces: (piece indices (batches, batch_size), width of each batch).

    The pieces are shuffled with a generator seeded by (seed, epoch), so a pass is the same in
    every process and on resume. With `buckets` > 1, each run of BATCHES_PER_LENGTH_GROUP batches
    is sorted by length before it is cut into batches, whose order is then shuffled: a batch holds
    tunes of similar length and its width is the smallest bucket width that holds its longest
    piece, so little of it is padding. The pass is filled up to whole batches with pieces from
    its start.
    """
    rng = np.random.default_rng([seed, epoch])
    count = len(lengths)
    order = rng.permutation(count)
    total = -(-count // batch_size) * batch_size
    order = np.resize(order, total)  # repeats from the start to fill the last batch
    if buckets > 1:
        _sort_within_groups(order, lengths, batch_size * BATCHES_PER_LENGTH_GROUP)
    batches = order.reshape(-1, batch_size)
    batches = batches[rng.permutation(len(batches))]
    widths = bucket_widths(seq_length, buckets)
    needed = lengths[batches].max(axis=1) - 1  # inputs of the longest piece
    return batches.astype(np.int64), widths[np.searchsorted(widths, needed)].astype(np.int64)


def make_tune_dataset(
    ids: np.ndarray,
    tune_starts: np.ndarray,
    seq_length: int,
    batch_size: int,
    *,
    buckets: int = 1,
    seed: int = 0,
    skip: int = 0,
    shard: Shard | None = None,
):
    """Endless training batches of whole-tune windows (see `tune_pieces`), padded with PAD.

    Each window starts at a tune's BOS with the model's zero state, as generation starts a tune,
    and holds the tune up to its EOS; what follows is PAD, in inputs and targets, and a PAD target
    adds nothing to the loss (`steps.loss_sum`). The LSTM and the causal Transformer read
    left to right, so the padding after a tune changes nothing before it.

    Args:
        ids: 1-D int stream from `tune_split.encode_stream` (or a memory map of one).
        tune_starts: each tune's BOS position in `ids`.
        seq_length: the widest window's inputs.
        batch_size: windows per batch (the global batch under a strategy).
        buckets: window widths to batch tunes of similar length into (1: every batch
            `seq_length` wide). A batch's width is the same for every shard of it.
        seed: seeds each pass's order (`whole_tune_batches`).
        skip: batches to leave out at the start (a resumed run's).
        shard: this input pipeline's part of every batch, for `tf.distribute`.

    Returns:
        A `tf.data.Dataset` of (inputs, targets), int32 (batch or replica batch, width), width at
        most `seq_length`.

    Raises:
        CorpusError: no tune holds a character to predict.
    """
    piece_starts, piece_lengths = tune_pieces(tune_starts, len(ids), seq_length)
    if not len(piece_starts):
        raise CorpusError("no tunes to make training windows of")

    def plan(epoch):
        batches, widths = whole_tune_batches(
            piece_lengths, batch_size, seq_length, buckets, seed, int(epoch)
        )
        return batches, widths

    def one_pass(epoch):
        batches, widths = tf.numpy_function(plan, [epoch], [tf.int64, tf.int64], stateful=False)
        batches = tf.ensure_shape(batches, [None, batch_size])
        return tf.data.Dataset.from_tensor_slices((batches, tf.ensure_shape(widths, [None])))

    batches = tf.data.Dataset.range(2**62).flat_map(one_pass).skip(skip)
    if shard is not None:
        batches = batches.map(
            lambda pieces, width: (shard.cut(pieces), tf.fill([shard.replicas], width))
        ).unbatch()
    read = _piece_reader(ids, piece_starts, piece_lengths)
    return batches.map(read, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def make_tune_evaluation_dataset(ids: np.ndarray, seq_length: int, batch_size: int,
                                 buckets: int = 1):  # fmt: skip
    """Every tune of a stream once, as whole-tune windows from its BOS (see `tune_pieces`), for
    validation: the windows a whole-tune run trains on, each tune scored from its start with the
    zero state, as generation starts a tune. Finite and in a fixed order: shuffled once with a
    fixed seed, so the first batches (`eval_batches` of them) are a fair sample of the tunes, then
    sorted by length within runs of BATCHES_PER_LENGTH_GROUP batches, so a batch holds tunes of
    similar length and little padding. PAD targets add nothing to the loss.

    Returns:
        A `tf.data.Dataset` of (inputs, targets), int32 (up to batch_size, width), width one of
        `bucket_widths(seq_length, buckets)`; empty when no tune holds a character to predict.
    """
    piece_starts, piece_lengths = tune_pieces(tune_start_positions(ids), len(ids), seq_length)
    order = np.random.default_rng(0).permutation(len(piece_lengths))
    _sort_within_groups(order, piece_lengths, batch_size * BATCHES_PER_LENGTH_GROUP)
    batches = [order[lo : lo + batch_size] for lo in range(0, len(order), batch_size)]
    widths = bucket_widths(seq_length, buckets)
    read = _piece_reader(ids, piece_starts, piece_lengths)

    def windows():
        for pieces in batches:
            width = widths[np.searchsorted(widths, piece_lengths[pieces].max() - 1)]
            yield pieces.astype(np.int64), np.int64(width)

    signature = (tf.TensorSpec([None], tf.int64), tf.TensorSpec([], tf.int64))
    return tf.data.Dataset.from_generator(windows, output_signature=signature).map(read)


def _piece_reader(ids: np.ndarray, piece_starts: np.ndarray, piece_lengths: np.ndarray):
    """A function from ((batch,) piece indices, width) to (inputs, targets), PAD past each piece."""
    if isinstance(ids, np.memmap):

        def read(pieces: np.ndarray, width) -> np.ndarray:
            offsets = np.arange(int(width) + 1, dtype=np.int64)
            starts, lengths = piece_starts[pieces], piece_lengths[pieces]
            inside = offsets[None, :] < lengths[:, None]
            positions = np.where(inside, starts[:, None] + offsets[None, :], 0)
            return np.where(inside, ids[positions], PAD).astype(np.int32)

        def gather(pieces, width):
            windows = tf.numpy_function(read, [pieces, width], tf.int32, stateful=False)
            windows = tf.ensure_shape(windows, [None, None])  # (batch, width + 1)
            return windows[:, :-1], windows[:, 1:]

        return gather
    stream = tf.constant(np.asarray(ids, dtype=np.int32))  # (n,)
    starts_table, lengths_table = tf.constant(piece_starts), tf.constant(piece_lengths)

    def gather(pieces, width):
        offsets = tf.range(width + 1, dtype=tf.int64)
        starts = tf.gather(starts_table, pieces)
        lengths = tf.gather(lengths_table, pieces)
        inside = offsets[None, :] < lengths[:, None]  # (batch, width + 1)
        positions = tf.where(inside, starts[:, None] + offsets[None, :], 0)
        windows = tf.where(inside, tf.gather(stream, positions), PAD)
        return windows[:, :-1], windows[:, 1:]

    return gather
