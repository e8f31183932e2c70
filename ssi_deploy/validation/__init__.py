"""Validation: comparators (``compare``), inputs (``inputs``) and the validate job (``runner``)."""

from .compare import (DEFAULT_TOLERANCES, ComparisonReport, MaskComparison, OutputComparison,
                      Tolerance, Tolerances, compare_mask, compare_output, compare_outputs,
                      error_stats, format_table)

__all__ = ["DEFAULT_TOLERANCES", "ComparisonReport", "MaskComparison", "OutputComparison",
           "Tolerance", "Tolerances", "compare_mask", "compare_output", "compare_outputs",
           "error_stats", "format_table"]
