"""What a researcher reads: figures, the report, the reproduction write-up and its PDF, built on one rendering layer
(render) and one list of outputs (catalog)."""
