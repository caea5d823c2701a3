"""ctxenergy: what input (prefill) and output (decode) tokens cost in GPU energy as context grows."""

__version__ = "0.1.0"
# The cell tables' layout (workflow/schemas/cell.schema.yaml): 2 added batch_size and engine_variant
# (docs/serving.md), peak memory and run-latency percentiles.
SCHEMA_VERSION = 2
