"""``ssi-deploy detect``: boxes for images, from a checkpoint, an ONNX export or an engine."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..errors import SSIError
from .model_options import detector_options, open_from_options


@click.command("detect")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@detector_options
@click.option("--json", "json_out", required=True, type=click.Path(path_type=Path),
              metavar="OUT.json", help="Write the detections of every image as JSON.")
@click.option("--draw", type=click.Path(path_type=Path), default=None, metavar="OUT.png",
              help="Draw the boxes, class names and scores: a .png/.jpg file for one image, a "
                   "folder for several (one <name>.png each).")
@click.option("--min-score", type=click.FloatRange(0.0, 1.0), default=0.3, show_default=True,
              help="Least score drawn by --draw (the JSON keeps every detection).")
def detect(images, arch, checkpoint, onnx, engine, sampling, seed, test_scale, device,
           json_out, draw, min_score):
    """Detect objects in IMAGES (files or folders of images) with the official test path:
    keep-ratio resize to the test scale (default 1667x1000), BGR->RGB, mean/std, pad to 32.
    Boxes are [x1, y1, x2, y2] in original-image pixels (inclusive, as the official output)."""
    from ..detection.draw import draw_detections
    from ..detection.images import list_images
    from ..outputs import check_output_path, write_text_atomic
    from ..validation.inputs import load_image

    paths = list_images(images)
    json_out = check_output_path(json_out, "--json", ".json")
    draw_targets, folder = _draw_targets(draw, paths)
    det = open_from_options(arch, checkpoint, onnx, engine, sampling, seed, test_scale, device)
    results, drawn = [], []
    made_folder = folder is not None and not folder.exists()
    try:
        if made_folder:
            folder.mkdir(parents=True)
        with click.progressbar(paths, label="detecting", file=sys.stderr, show_pos=True) as bar:
            for p in bar:
                img = load_image(p)
                item = det.prepare(img)
                dets, density, seconds = det.run(item)
                results.append({"image": str(p), "height": int(img.shape[0]),
                                "width": int(img.shape[1]), "scale_factor": item.scale_factor,
                                "mean_density": density, "seconds": round(seconds, 4),
                                "detections": dets})
                if draw_targets:
                    drawn.append(draw_detections(img, dets, draw_targets[p], det.class_names,
                                                 min_score))
    except BaseException:
        for f in drawn:  # a failed run leaves no drawings behind (and no folder it made)
            f.unlink(missing_ok=True)
        if made_folder and not any(folder.iterdir()):
            folder.rmdir()
        raise
    finally:
        det.close()
    doc = {"model": det.source, "test_scale": list(det.test_scale), "images": results}
    write_text_atomic(json_out, json.dumps(doc, indent=2) + "\n", "--json")
    for r in results:
        top = ", ".join(f"{d['name']} {d['score']:.2f}" for d in r["detections"][:3])
        click.echo(f"{r['image']}: {len(r['detections'])} detections"
                   + (f" ({top}{', ...' if len(r['detections']) > 3 else ''})" if top else ""))
    click.echo(f"detections: {json_out}" + (f"; drawn: {draw}" if draw else ""))


def _draw_targets(draw: Path | None, paths: list[Path]) -> tuple[dict[Path, Path], Path | None]:
    """Where each image's drawing goes, and the folder they go to (None: one file); checked
    before any detection runs, nothing created yet."""
    from ..outputs import check_output_path

    if draw is None:
        return {}, None
    if len(paths) == 1 and not draw.is_dir():
        if draw.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise SSIError(f"--draw {draw}: give a .png or .jpg file (or a folder)")
        return {paths[0]: check_output_path(draw, "--draw")}, None
    if draw.exists() and not draw.is_dir():
        raise SSIError(f"--draw {draw}: with {len(paths)} images give a folder (one drawing "
                       "per image)")
    targets = {p: draw / f"{p.stem}.png" for p in paths}
    if len(set(targets.values())) != len(targets):
        raise SSIError("--draw: two images share a file name; draw them into separate folders")
    if draw.is_dir():
        return {p: check_output_path(t, "--draw") for p, t in targets.items()}, draw
    parent = next((a for a in draw.absolute().parents if a.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise SSIError(f"--draw {draw}: cannot create the folder ({parent} is not a writable "
                       "folder)")
    return targets, draw
