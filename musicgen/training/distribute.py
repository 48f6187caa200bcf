"""Which `tf.distribute` strategy a training run uses, and which process of a cluster writes files.

- "one": TensorFlow's default strategy, one device (the GPU when there is one): what `train` always
  did, with no distribution overhead.
- "mirrored": `MirroredStrategy` over every GPU of this machine. Without GPUs it mirrors over the
  logical CPU devices: one unless `MUSICGEN_LOGICAL_CPUS=N` splits the CPU into N (see
  `tfsetup.import_tensorflow`), which is how the mirrored path is tested on a CPU-only machine.
- "multiworker": `MultiWorkerMirroredStrategy` across the processes that `TF_CONFIG` describes,
  one per machine, each mirroring over its own GPUs (or CPU).
- "auto": "multiworker" when `TF_CONFIG` names more than one task, else "mirrored" when several
  GPUs are visible, else "one".

`TrainConfig.batch_size` is always the global batch: each of the N replicas takes batch_size / N
windows of every step, and the loss is divided by the global batch's character count, so the
summed gradient is the one a single device would compute for the whole batch.
"""

from __future__ import annotations

import dataclasses
import json
import os

from musicgen.errors import MusicgenError
from musicgen.tfsetup import gpu_devices, import_tensorflow

STRATEGIES = ("auto", "one", "mirrored", "multiworker")


@dataclasses.dataclass(frozen=True)
class Distribution:
    """A strategy and this process's place in it.

    Attributes:
        strategy: the `tf.distribute.Strategy` to build variables under and run steps with.
        name: "one", "mirrored" or "multiworker" ("auto" resolved).
        replicas: replicas in sync across all workers.
        workers: processes taking part (1 unless multi-worker).
        worker: this process's index among them.
        is_chief: this process writes checkpoints, logs and plots; the others only train.
    """

    strategy: object
    name: str
    replicas: int
    workers: int = 1
    worker: int = 0
    is_chief: bool = True

    @property
    def distributed(self) -> bool:
        """True when steps go through `strategy.run` on more than TensorFlow's default strategy."""
        return self.name != "one"

    def describe(self) -> str:
        """One line for the log, e.g. "mirrored over 2 replicas" or "one device"."""
        if self.name == "one":
            return "one device"
        text = f"{self.name} over {self.replicas} replica{'s' * (self.replicas != 1)}"
        if self.workers > 1:
            role = "chief" if self.is_chief else "worker"
            text += f" on {self.workers} workers (this is worker {self.worker}, the {role})"
        return text

    def check_batch(self, batch_size: int) -> None:
        """Raises MusicgenError unless the global batch splits evenly over the replicas."""
        if batch_size % self.replicas:
            raise MusicgenError(
                f"--batch-size {batch_size} does not split evenly over {self.replicas} replicas; "
                f"use a multiple of {self.replicas}"
            )


def make_distribution(name: str = "auto") -> Distribution:
    """Builds the strategy `name` (one of STRATEGIES).

    Call it before any other TensorFlow work in the process: MultiWorkerMirroredStrategy must
    start TensorFlow's collective runtime itself.

    Raises:
        MusicgenError: an unknown name, or "multiworker" without a usable TF_CONFIG.
    """
    if name not in STRATEGIES:
        raise MusicgenError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    cluster = _cluster_from_env()
    if name == "auto":
        if cluster and cluster["tasks"] > 1:
            name = "multiworker"
        elif len(gpu_devices()) > 1:
            name = "mirrored"
        else:
            name = "one"
    tf = import_tensorflow()
    if name == "one":
        return Distribution(tf.distribute.get_strategy(), "one", replicas=1)
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy(_local_devices(tf))
        return Distribution(strategy, "mirrored", replicas=strategy.num_replicas_in_sync)
    if cluster is None:
        raise MusicgenError(
            "--strategy multiworker needs the TF_CONFIG environment variable describing the "
            'cluster, e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\' (see the README)'
        )
    return _multiworker(tf, cluster)


def _local_devices(tf) -> list[str]:
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    return [device.name for device in devices]


def _multiworker(tf, cluster: dict) -> Distribution:
    implementation = tf.distribute.experimental.CommunicationImplementation
    options = tf.distribute.experimental.CommunicationOptions(
        # NCCL needs GPUs; RING (gRPC) works everywhere.
        implementation=implementation.AUTO if gpu_devices() else implementation.RING
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    # The chief is the "chief" task, or worker 0 of a cluster that has none.
    is_chief = task_type == "chief" or (
        task_type == "worker" and task_id == 0 and not cluster["chief"]
    )
    return Distribution(
        strategy,
        "multiworker",
        replicas=strategy.num_replicas_in_sync,
        workers=cluster["tasks"],
        worker=task_id + (1 if cluster["chief"] and task_type == "worker" else 0),
        is_chief=is_chief,
    )


def _cluster_from_env() -> dict | None:
    """TF_CONFIG's cluster size and whether it names a chief; None when TF_CONFIG is unset.

    Raises:
        MusicgenError: TF_CONFIG is set but is not the JSON TensorFlow expects.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        tasks = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MusicgenError(
            f"TF_CONFIG is not a valid cluster description ({type(exc).__name__}: {exc}); it must "
            'be JSON like {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}'
        ) from None
    if kind not in ("chief", "worker") or not 0 <= index < len(cluster.get(kind, [])):
        raise MusicgenError(
            f"TF_CONFIG's task {kind!r} {index} is not in its cluster; each process needs its own "
            "task type and index"
        )
    return {"tasks": tasks, "chief": bool(cluster.get("chief"))}
