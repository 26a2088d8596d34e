"""The latency search: the layer above the speed model (``pipeline.profiling``) and the trainers."""
