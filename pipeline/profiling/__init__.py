"""Latency measured on the runtime that ships, for models built on the spot (a layer above the
export and metrics layers, which it combines): :mod:`pipeline.profiling.chain` exports a model
through the pipeline's own chain and times models in interleaved rounds;
:mod:`pipeline.profiling.speed_data` measures the latency search's speed-model data."""
