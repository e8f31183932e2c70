"""``ssi-deploy profile``: latency statistics, measured densities and backbone GMACs.

One run times the SSI model on a backend and, with ``compare_dense``, the dense network with
the same weights (``models.dense_twin``) on the same backend and input, so the speed-up is
measured within one run (run-to-run noise on shared machines is about +-30 %; the report's
``speedup_verdict`` says whether this run's numbers can be trusted).

Three steps, each usable alone:

- ``plan_profile(cfg) -> ProfilePlan`` (``plan``): checks everything the user gave (files,
  manifest, shapes, ``--report`` writable, ``--density``, the dense engine, the checkpoint) and
  decides what will be timed, before any model is built;
- ``run_profile(plan) -> Measurements`` (``run``): builds, exports and times;
- ``build_report(plan, measurements) -> dict`` and ``format_report(report) -> str``
  (``report``): the JSON and the table from the same dict.

``profile(cfg)`` does all three (and writes ``cfg.report``). A file is timed as it is and its
densities come from the mask outputs its manifest lists; only what needs the weights (the
PyTorch model of ``--backend torch``, a ``--density`` re-export, the dense twin, densities of
a file without mask outputs) needs ``--checkpoint`` for a file exported from a checkpoint. A
TensorRT engine (``.plan``) runs on the tensorrt backend, its manifest from its sidecar.
"""

from __future__ import annotations

from .config import ProfileConfig
from .densities import per_stage
from .engines import layer_profile
from .inputs import DEFAULT_HW, smooth_noise
from .plan import ProfilePlan, plan_profile
from .report import build_report, format_report, speedup_verdict, write_report
from .run import Measurements, run_profile
from .stats import CV_WARN, Progress, latency_stats, machine_state, throughput

__all__ = ["ProfileConfig", "ProfilePlan", "Measurements", "plan_profile", "run_profile",
           "build_report", "format_report", "speedup_verdict", "write_report", "profile",
           "latency_stats", "throughput", "Progress", "machine_state", "smooth_noise",
           "layer_profile", "per_stage", "CV_WARN", "DEFAULT_HW"]


def profile(cfg: ProfileConfig) -> dict:
    """Plan, run and report in one call; the report is written to ``cfg.report`` if set."""
    plan = plan_profile(cfg)
    report = build_report(plan, run_profile(plan))
    if plan.report_path is not None:
        write_report(plan.report_path, report)
    return report
