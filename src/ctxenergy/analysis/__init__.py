"""Derived metrics from the table of cells (README.md "What it measures"; docs/measurement.md).

One concept per module:
  cells        the table of cells as the analysis sees it: numbers as numbers, which cells may enter a fit and why not
  uncertainty  intervals: half-widths, standard errors, ratio intervals, seeded draws
  per_cell     J/token, ms/token, power, achieved TFLOP/s and memory bandwidth against the device's peak
  scaling      dE/dL, the weighted fit E(L) = a + bL + cL^2, thresholds (efficiency, crossover, power plateau)
  io_ratio     E_in, E_out and their ratio per L
  engines      energy and latency ratios between engines at equal L
  traces       representative power-trace windows for the figures
  paper_values the seed paper's numbers, in one table
  claims       the paper's Table 1 beside ours, and each claim judged against our numbers
  derive       all of the above -> results/analysis/*.parquet (`ctxenergy analyze`)
"""
