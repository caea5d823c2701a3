"""ctxenergy: what input (prefill) and output (decode) tokens cost in GPU energy as context grows."""

__version__ = "0.1.0"
SCHEMA_VERSION = 2  # 2: batch_size and engine_variant (docs/serving.md)
