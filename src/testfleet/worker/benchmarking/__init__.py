"""Real model benchmarks: the runner child process and the pieces it is built from.

The worker's :class:`~testfleet.worker.executors.benchmark.BenchmarkExecutor`
starts ``python -m testfleet.worker.benchmarking.runner`` for each attempt. The
runner builds the model, times it per batch size and streams one JSON line per
batch size on stdout (see :mod:`.protocol`), so a child killed at a large batch
size still leaves the smaller sizes' results with the parent.

Modules, one concept each:

* :mod:`.protocol`: the request on stdin and the JSON lines on stdout.
* :mod:`.errors`: classified failures; what counts as out of memory.
* :mod:`.statistics`: percentiles and the per-batch-size summary (pure).
* :mod:`.autobatch`: the batch-size sweep and its stopping rule (pure).
* :mod:`.devices`: which hardware kind a task runs on (pure, executor side).
* :mod:`.metrics`: the sampler thread (CPU, RSS, NVML) and its summaries.
* :mod:`.accelerator`: a torch device: availability, synchronisation, peak memory.
* :mod:`.models`: the model zoo (built from configs, random weights) and local loading.
* :mod:`.inputs`: dummy inputs of the right shape and dtype per model family.
* :mod:`.precision`: fp32/fp16/bf16 casts, int8 dynamic quantization, capability probes.
* :mod:`.timing`: the timed loop.
* :mod:`.conditions`: what a reader needs to judge the numbers (versions, threads, load).
* :mod:`.outcome`: the parent's side: lines in, ``BenchmarkOutcome`` and status out (pure).
* :mod:`.runner`: the child's entry point.

Nothing here imports torch or transformers at module level: the worker imports
this package without them, and only the runner child pays for the import.
"""
