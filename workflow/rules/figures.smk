# Figures: filled in by the analysis stage (ctxenergy.figures).
