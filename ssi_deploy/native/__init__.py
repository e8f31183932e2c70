"""Native SSI kernels from Python: the CPU twins (``cpu_twins``), built from ``plugins/``."""
