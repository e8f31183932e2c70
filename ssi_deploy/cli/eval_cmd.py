"""``ssi-deploy eval``: COCO box mAP of a detector (pycocotools' COCOeval)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from .model_options import detector_options, open_from_options


@click.command("eval")
@click.option("--coco-annotations", "annotations", required=True,
              type=click.Path(dir_okay=False, path_type=Path), metavar="instances.json",
              help="COCO instances file, e.g. instances_val2017.json.")
@click.option("--images", "images_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder of its images.")
@detector_options
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Evaluate the first N images (by image id).")
@click.option("--report", type=click.Path(path_type=Path), default=None, metavar="r.json",
              help="Write the metrics, the mean density and the detections as JSON.")
def eval_(annotations, images_dir, arch, checkpoint, onnx, engine, sampling, seed, test_scale,
          device, limit, report):
    """Run the detector on the COCO images and report box mAP (COCOeval) and the measured
    mean mask density (unweighted mean over the sampling layers and images)."""
    from ..detection.coco import coco_images, evaluate, load_coco, to_coco_results
    from ..outputs import check_output_path, write_text_atomic
    from ..validation.inputs import load_image

    if report is not None:
        report = check_output_path(report, "--report", ".json")
    coco = load_coco(annotations)
    items = coco_images(coco, images_dir, limit)
    det = open_from_options(arch, checkpoint, onnx, engine, sampling, seed, test_scale, device)
    results, densities, seconds = [], [], 0.0
    t0 = time.perf_counter()
    try:
        with click.progressbar(items, label="evaluating", file=sys.stderr,
                               show_pos=True) as bar:
            for image_id, path in bar:
                dets, density, s = det.run(det.prepare(load_image(path)))
                results.extend(to_coco_results(image_id, dets))
                seconds += s
                if density is not None:
                    densities.append(density)
    finally:
        det.close()
    metrics = evaluate(coco, results, [i for i, _ in items])
    summary = metrics.pop("summary", "")
    density = sum(densities) / len(densities) if densities else None
    doc = {"model": det.source, "annotations": str(annotations), "images": len(items),
           "test_scale": list(det.test_scale), "metrics": metrics, "mean_density": density,
           "mean_seconds_per_image": seconds / max(len(items), 1),
           "wall_seconds": time.perf_counter() - t0, "detections": results}
    click.echo(summary.rstrip())
    click.echo(f"{'metric':<10} {'value':>8}")
    for k, v in metrics.items():
        click.echo(f"{k:<10} {v:>8.4f}")
    click.echo(f"{'density':<10} {density:>8.4f}" if density is not None else
               f"{'density':<10} {'n/a':>8}")
    if report is not None:
        write_text_atomic(report, json.dumps(doc, indent=2) + "\n", "--report")
        click.echo(f"report: {report}")
