"""The profile report: one JSON-ready dict (``build_report``), the table printed from that same
dict (``format_report``), and the judgement of a measured speed-up (``speedup_verdict``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..input_shape import format_shape
from .densities import per_stage
from .plan import ProfilePlan
from .run import Measurements, Side
from .stats import CV_WARN, LATENCY_KEYS, MIN_RUNS, public_latency, throughput


def _side(side: Side, batch: int, gmacs: float) -> dict:
    return {"latency_ms": public_latency(side.stats), "latency_std_ms": side.stats["std"],
            "latency_cv": side.stats["cv"], "iterations": side.stats["iterations"],
            "throughput_per_s": throughput(side.stats, batch), "backbone_gmacs": gmacs}


def build_report(plan: ProfilePlan, m: Measurements) -> dict:
    """The report (keys: latency_ms, throughput_per_s, density, backbone_gmacs, profiled,
    machine; with a dense side: dense{...}, speedup_vs_dense, gmacs_ratio_vs_dense,
    speedup_verdict; with --per-layer: layers, layers_summary)."""
    from ..cost_model import backbone_gmacs

    shape, density = plan.shape, m.density
    gmacs = backbone_gmacs(plan.arch, shape, density if density else None)
    backend = {k: v for k, v in m.sparse.backend.items() if k != "model"}
    r = {"backend": backend, "arch": plan.arch, "input": plan.input_info,
         "input_shape": list(shape), "profiled": m.sparse.info,
         **_side(m.sparse, shape[0], gmacs),
         "density": density,
         "density_mean": float(np.mean(list(density.values()))) if density else 1.0,
         "density_per_stage": per_stage(density), "density_source": m.density_source,
         "forced_density": plan.cfg.density,
         "machine": _machine(m.machine, backend.get("threads", plan.cfg.threads)),
         "notes": list(plan.notes) + list(m.notes)}
    from ..models.registry import get_arch
    if get_arch(plan.arch).detector:  # the heads' share, apart from the official counter
        from ..cost_model import head_gmacs
        r["heads_gmacs"] = head_gmacs(plan.arch, shape)
    if m.layers is not None:
        r["layers"], r["layers_summary"] = m.layers["layers"], m.layers["summary"]
    if m.dense is not None:
        dg = backbone_gmacs(m.dense.arch, shape, None)
        r["dense"] = {**m.dense.info, **_side(m.dense, shape[0], dg)}
        r["speedup_vs_dense"] = m.dense.stats["median"] / m.sparse.stats["median"]
        r["speedup_basis"] = "median latency"
        r["gmacs_ratio_vs_dense"] = dg / gmacs if gmacs > 0 else None
        r["speedup_verdict"] = speedup_verdict(r)
    r["warnings"] = [f"{name}: latency varies a lot (CV {100 * cv:.0f} %); use more iterations "
                     "or a quieter machine" for name, cv in _cvs(r) if cv > CV_WARN]
    return r


def _machine(state: dict, threads) -> dict:
    before, after = state.get("before", {}), state.get("after", {})
    return {"cpu_count": before.get("cpu_count"), "threads": threads,
            "load_avg_before": before.get("load_avg"), "load_avg_after": after.get("load_avg"),
            "other_running_before": before.get("other_running"),
            "other_running_after": after.get("other_running"),
            "allocator": state.get("allocator")}


def _cvs(r: dict) -> list[tuple[str, float]]:
    out = [(r["arch"], r["latency_cv"])]
    if "dense" in r:
        out.append((r["dense"]["arch"], r["dense"]["latency_cv"]))
    return out


def busy_machine(machine: dict) -> str | None:
    """'load average 3.1 on 2 cores' when the machine had more runnable work than cores."""
    cpus = machine.get("cpu_count") or 1
    loads = [la[0] for la in (machine.get("load_avg_before"), machine.get("load_avg_after")) if la]
    if loads and max(loads) > cpus + 0.5:
        return f"load average {max(loads):.1f} on {cpus} cores (this run included)"
    return None


def speedup_verdict(r: dict) -> dict:
    """Can the measured speed-up be trusted, and what it means against the MAC ratio."""
    d = r["dense"]
    speedup, mac = r["speedup_vs_dense"], r.get("gmacs_ratio_vs_dense")
    reasons = []
    if max(r["latency_cv"], d["latency_cv"]) > CV_WARN:
        reasons.append(f"CV sparse {100 * r['latency_cv']:.0f} %, dense "
                       f"{100 * d['latency_cv']:.0f} % (over {100 * CV_WARN:.0f} %)")
    runs = min(r["iterations"], d["iterations"])
    if runs < MIN_RUNS:
        reasons.append(f"{runs} timed run{'s' if runs != 1 else ''} per side (under {MIN_RUNS})")
    busy = busy_machine(r.get("machine", {}))
    if busy:
        reasons.append(busy)
    if reasons:
        text = (f"noisy: {'; '.join(reasons)}: the {speedup:.2f}x ratio is not reliable on this "
                "run; rerun on an idle machine or with more iterations")
    elif mac and speedup > 1.05 * mac:
        text = (f"speed-up {speedup:.2f}x, above the {mac:.2f}x the MAC ratio allows: the dense "
                "kernels run less efficiently than the sparse ones on this backend, so the "
                "ratio compares kernels, not the work saved")
    elif mac:
        text = (f"speed-up {speedup:.2f}x of the {mac:.2f}x the MAC ratio allows "
                f"({100 * speedup / mac:.0f} %; CV sparse {100 * r['latency_cv']:.0f} %, "
                f"dense {100 * d['latency_cv']:.0f} %)")
    else:
        text = f"speed-up {speedup:.2f}x"
    if reasons and mac and speedup > 1.05 * mac:
        text += f" (it is also above the {mac:.2f}x MAC ratio, which no sparse kernel can beat)"
    if r["backend"].get("backend") == "onnxruntime":
        text += ("; onnxruntime computes the SSI nodes densely, so no speed-up is expected "
                 "on this backend")
    return {"reliable": not reasons, "reasons": reasons, "text": text}


def write_report(path: str | Path, report: dict) -> Path:
    """The JSON report, written atomically (no partial file on failure)."""
    from ..outputs import write_text_atomic
    return write_text_atomic(path, json.dumps(report, indent=2) + "\n", "--report")


def _row(name: str, lat: dict, thr: float, g: float, cv: float) -> str:
    return (f"{name:<24} " + " ".join(f"{lat[k]:>9.2f}" for k in LATENCY_KEYS)
            + f" {100 * cv:>5.1f} {thr:>8.2f} {g:>8.2f}")


def format_report(r: dict, top_layers: int = 10) -> str:
    """A readable table of the report dict (``top_layers`` slowest layers with --per-layer)."""
    lines = [f"{r['arch']} on {r['backend'].get('backend')} ({r['backend'].get('device', '')}), "
             f"input {format_shape(r['input_shape'])}"]
    head = (f"{'model':<24} " + " ".join(f"{k:>9}" for k in LATENCY_KEYS)
            + f" {'CV %':>5} {'img/s':>8} {'GMACs':>8}")
    lines += [head, "-" * len(head)]
    prof = r.get("profiled") or {}
    label = r["arch"] + (" (re-export)" if prof.get("reexported") else
                         " (engine)" if prof.get("source") == "engine" else "")
    lines.append(_row(label, r["latency_ms"], r["throughput_per_s"], r["backbone_gmacs"],
                      r["latency_cv"]))
    if "dense" in r:
        d = r["dense"]
        dlabel = d["arch"] + (" (engine)" if d.get("source") == "engine" else "")
        lines.append(_row(dlabel, d["latency_ms"], d["throughput_per_s"], d["backbone_gmacs"],
                          d["latency_cv"]))
    lines.append("(latencies in ms)")
    lines += _profiled_lines(r, prof) + _density_lines(r) + _layer_lines(r, top_layers)
    lines += _speedup_lines(r)
    lines += [f"note: {n}" for n in r.get("notes", [])]
    lines += [f"warning: {w}" for w in r.get("warnings", [])]
    return "\n".join(lines)


def _profiled_lines(r: dict, prof: dict) -> list[str]:
    if prof.get("reexported"):
        return [f"profiled: a re-export ({prof.get('dtype')}, static), not {prof.get('given')}"]
    if prof.get("source") == "engine":
        dense = r.get("dense", {})
        return [f"profiled: engine {prof.get('path')} ({prof.get('precision') or '?'})"
                + (f" vs dense engine {dense['engine']} ({dense.get('precision')})"
                   if dense.get("source") == "engine" else "")]
    return []


def _density_lines(r: dict) -> list[str]:
    if not r["density"]:
        return []
    vals = list(r["density"].values())
    src = f" ({r['density_source']})" if r.get("density_source") else ""
    forced = f" (forced {r['forced_density']:g})" if r.get("forced_density") else ""
    stages = r.get("density_per_stage") or per_stage(r["density"])
    return [f"density over {len(vals)} sampling layers{src}: mean {np.mean(vals):.3f}, "
            f"min {min(vals):.3f}, max {max(vals):.3f}{forced}",
            "  per stage: " + ", ".join(f"{s} {v:.3f}" for s, v in stages.items())]


def _layer_lines(r: dict, top_layers: int) -> list[str]:
    if not r.get("layers"):
        return []
    sm = r["layers_summary"]
    lines = [f"per-layer times ({sm['source']}, mean of {sm['iterations']} runs): "
             f"{sm['count']} layers, {sm['total_ms']:.3f} ms in all; SSI plugin layers "
             f"{sm['ssi_plugin_ms']:.3f} ms ({100 * sm['ssi_plugin_share']:.1f} %)"]
    for lay in r["layers"][:max(0, top_layers)]:
        tag = f"[SSI {lay['ssi_op'] or 'plugin'}] " if lay["plugin"] else ""
        lines.append(f"  {lay['ms']:>9.3f} ms {100 * lay['share']:>5.1f} %  {tag}{lay['name']}")
    if len(r["layers"]) > top_layers:
        lines.append(f"  ... {len(r['layers']) - top_layers} more (all under 'layers' in the "
                     "JSON report)")
    return lines


def _speedup_lines(r: dict) -> list[str]:
    mach = r.get("machine") or {}
    load = mach.get("load_avg_before")
    ctx = (f"timing: {mach.get('threads') or 'default'} threads, {mach.get('cpu_count')} cores"
           + (f", load average {load[0]:.1f} before timing" if load else "")
           + (f", {mach['other_running_before']} other runnable tasks"
              if mach.get("other_running_before") is not None else ""))
    if "speedup_vs_dense" not in r:
        return [ctx]
    ratio = r.get("gmacs_ratio_vs_dense")
    return [f"speedup vs dense: {r['speedup_vs_dense']:.2f}x (median latency); backbone GMACs "
            f"ratio {ratio:.2f}x" if ratio else
            f"speedup vs dense: {r['speedup_vs_dense']:.2f}x (median latency)", ctx,
            f"verdict: {r['speedup_verdict']['text']}"]
