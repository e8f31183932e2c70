"""The docs run as written: every shell command of README.md and docs/*.md, in document order.

Each fenced block with no language, ``sh``, ``bash``, ``shell`` or ``console`` (there only the
``$ `` lines) is split into commands (``\\`` continuations joined, a trailing ``# comment``
kept apart); ``python`` blocks run as scripts. One temporary folder per document, so an export
made by one command is validated by the next. Each command must exit 0, or what its comment
says (``# exits 1 ...``, ``# exits 0, or 1 when ...``); a ``flops`` comment that starts with a
number must be what the command prints.

What cannot run here is a pytest skip with its reason, never a silent pass: Docker, the full
TensorRT builder or a GPU (``docker``, the ``ssi`` alias of docker run, ``ssi-deploy build``,
``.plan`` files, ``cmake`` of the plugin library, ``scripts/gpu_check.sh``,
``scripts/trt_smoke.sh``), ``pip install`` (it would change the shared environment), and
``make demo`` / ``make test`` (they are what runs this test). A line the test does not know
fails: teach it below. A ``<!-- not run: REASON -->`` line right before a fence skips that
block with REASON.

Shapes and architectures are made small (``SUBSTITUTIONS``, each substituted command is
printed), the official checkpoint the docs name is a synthetic official-layout file of the
substituted architecture, and the demo's photograph ``out/demo/photo.png`` is written from
``skimage.data.coffee()`` (what ``make demo`` writes) instead of running the demo.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"", "sh", "bash", "shell", "console"}

# (command kinds it applies to, pattern, replacement): small shapes and the ResNet-50 SSI
# network instead of R-101-DCN (an R-101-DCN export takes minutes on 2 cores); flops keeps
# the documented architectures (it builds no model, and its numbers are checked).
MODEL_CMDS = ("export", "validate", "profile", "python", "detect", "eval")
SUBSTITUTIONS = [
    (MODEL_CMDS, r"\bsparse_resnet101_dcn\b", "sparse_resnet50"),
    (MODEL_CMDS, r"\bfaster_rcnn_sparse_resnet101_dcn\b", "faster_rcnn_sparse_resnet50"),
    (("export", "profile"), r"--input-shape 1x3x(800x1216|512x512)\b", "--input-shape 1x3x64x64"),
    # a dynamic detector export needs P6 >= 2x2 (see export_onnx)
    (("export",), r"--input-shape 1x3x800x1344\b", "--input-shape 1x3x96x128"),
    (("python",), r"\bshort_side=800\b", "short_side=128"),
]
# options appended when the command does not give them (first option: the test)
APPENDED = [
    ("profile", ("--input-shape",), ["--input-shape", "1x3x64x64"]),  # dynamic files: 512x512
    ("profile", ("--iterations", "--duration-s"), ["--iterations", "3"]),
    ("validate", ("--short-side",), ["--short-side", "128"]),  # with --image: 1000 by default
    ("detect", ("--test-scale",), ["--test-scale", "160x96"]),  # 1667x1000 by default
]
# Checkpoints the docs name: (architecture of the substituted commands, FPN). The docs' file is
# the official w0_1 release (the detector on sparse_resnet101_dcn); here, an official-layout
# file of the substituted architecture's detector (backbone commands ignore its heads).
CHECKPOINTS = {"ssi_r101_w0_1.pth": ("faster_rcnn_sparse_resnet50", True)}
PHOTO = "out/demo/photo.png"  # written by `make demo`

DOCKER = "needs Docker (docker build pulls nvcr.io's TensorRT image; the runs need an NVIDIA GPU)"
TRT = "needs the full TensorRT builder and an NVIDIA GPU (engines, .plan files)"
SKIP_FIRST = {
    "docker": DOCKER,
    "ssi": "`ssi` is the docs' alias of `docker run --gpus all ... ssi-deploy`: " + DOCKER,
    "alias": "defines the docs' `ssi` alias of docker run: " + DOCKER,
    "cmake": "builds the TensorRT plugin library (CUDA toolchain and TensorRT headers)",
    "pip": "installs into the environment: this test must not change the shared venv",
}
SKIP_MAKE = {
    "demo": "`make demo` creates .venv and runs the demo; this test stands in for it (the "
            "demo's photograph is written from skimage.data.coffee())",
    "test": "`make test` creates .venv and runs the suite, which runs this test",
    "plugins": "builds the CUDA kernels and the TensorRT plugin library (nvcc, TensorRT headers)",
    "plugins-test": "builds the TensorRT plugin library and runs its harness (TensorRT headers)",
}
GPU_SCRIPTS = {"scripts/gpu_check.sh": "times the CUDA kernels on an NVIDIA GPU",
               "scripts/trt_smoke.sh": TRT}


@dataclass
class Item:
    doc: str
    line: int
    kind: str  # "cli", "python", "script", "activate", "shell", "skip", "unknown"
    text: str  # as written, without the comment
    comment: str = ""
    reason: str = ""  # skip reason, or why unknown
    argv: list[str] = field(default_factory=list)  # after substitution (cli: after ssi-deploy)
    subs: list[str] = field(default_factory=list)  # what was substituted
    expect: tuple[int, ...] = (0,)

    @property
    def id(self) -> str:
        first = self.text.splitlines()[0] if self.kind == "python" else self.text
        short = first if len(first) <= 60 else first[:57] + "..."
        return f"{self.doc}:{self.line}:{short}"


def _split_comment(line: str) -> tuple[str, str]:
    """``cmd  # comment`` -> (cmd, comment); a ``#`` inside quotes or a word is no comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def _blocks(text: str):
    """(language, first line number, lines, note) of each fenced block; note: not-run reason."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```\s*([\w+-]*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        prev = lines[i - 1].strip() if i else ""
        note = re.match(r"<!--\s*not run:\s*(.+?)\s*-->$", prev)
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        yield m.group(1).lower(), i + 2, lines[i + 1:j], note.group(1) if note else None
        i = j + 1


def _commands(lang: str, start: int, lines: list[str]):
    """(line number, command, comment) of a shell block, continuations joined."""
    k = 0
    while k < len(lines):
        n, raw = start + k, lines[k]
        k += 1
        if lang == "console":
            if not raw.startswith("$ "):
                continue  # output
            raw = raw[2:]
        while raw.rstrip().endswith("\\") and k < len(lines):
            raw = raw.rstrip()[:-1].rstrip() + " " + lines[k].strip()
            k += 1
        cmd, comment = _split_comment(raw.strip())
        if cmd:
            yield n, cmd, comment


def _expected_exit(comment: str) -> tuple[int, ...]:
    m = re.search(r"\bexit(?:s| code)?\s+(\d+)(?:\s*,?\s*or\s+(\d+))?", comment)
    return tuple(int(g) for g in m.groups() if g is not None) if m else (0,)


def _substitute(kind: str, text: str) -> tuple[str, list[str]]:
    subs = []
    for kinds, pattern, repl in SUBSTITUTIONS:
        if kind in kinds and re.search(pattern, text):
            subs.append(f"{pattern} -> {repl}")
            text = re.sub(pattern, repl, text)
    return text, subs


def _classify(doc: str, n: int, cmd: str, comment: str) -> Item:
    item = Item(doc, n, "unknown", cmd, comment, expect=_expected_exit(comment))
    try:
        tokens = shlex.split(cmd)
    except ValueError as e:
        item.reason = f"cannot split the line: {e}"
        return item
    first = tokens[0]
    for script, why in GPU_SCRIPTS.items():
        if any(t.endswith(script) for t in tokens):
            item.kind, item.reason = "skip", f"{script} {why}"
            return item
    if first in SKIP_FIRST:
        item.kind, item.reason = "skip", SKIP_FIRST[first]
        return item
    if first == "make":
        target = tokens[1] if len(tokens) > 1 else ""
        if target in SKIP_MAKE:
            item.kind, item.reason = "skip", SKIP_MAKE[target]
        else:
            item.reason = f"make target {target!r} unknown to this test"
        return item
    if first in (".", "source") and tokens[1:] == [".venv/bin/activate"]:
        item.kind = "activate"
        return item
    if any(op in tokens for op in ("&&", "||", "|", ";", ">", ">>", "<")) or "$" in cmd:
        item.reason = "shell syntax (operators, variables) in a command this test would run"
        return item
    if first in ("ssi-deploy", ".venv/bin/ssi-deploy"):
        sub = tokens[1] if len(tokens) > 1 else ""
        if sub == "build" or any(t.endswith(".plan") for t in tokens):
            item.kind, item.reason = "skip", TRT
            return item
        text, item.subs = _substitute(sub, cmd)
        argv = shlex.split(text)[1:]
        for cmd_name, present, extra in APPENDED:
            if sub == cmd_name and not any(o in argv for o in present):
                if cmd_name == "validate" and "--image" not in argv:
                    continue
                argv += extra
                item.subs.append("+ " + " ".join(extra))
        item.kind, item.argv = "cli", argv
        return item
    if first in ("python", "python3"):
        item.kind, item.argv = "script", tokens[1:]
        return item
    if first == "mkdir":
        item.kind, item.argv = "shell", tokens
        return item
    item.reason = f"{first!r}: a command this test does not know"
    return item


def collect() -> list[Item]:
    items = []
    for path in DOCS:
        doc = path.relative_to(ROOT).as_posix()
        for lang, start, lines, note in _blocks(path.read_text(encoding="utf-8")):
            if lang == "python":
                code, subs = _substitute("python", "\n".join(lines) + "\n")
                item = Item(doc, start, "python", "\n".join(lines), argv=[code], subs=subs)
                if note:
                    item.kind, item.reason = "skip", note
                items.append(item)
            elif lang in SHELL_LANGS:
                for n, cmd, comment in _commands(lang, start, lines):
                    item = _classify(doc, n, cmd, comment)
                    if note:
                        item.kind, item.reason = "skip", note
                    items.append(item)
    return items


ITEMS = collect()


# -- running -----------------------------------------------------------------------------------

def _cli() -> list[str]:
    """The entry point of the environment that runs the tests (.venv's under `make test`)."""
    exe = Path(sys.executable).parent / ("ssi-deploy.exe" if os.name == "nt" else "ssi-deploy")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "ssi_deploy.cli.main"]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


_SHARED: dict[str, Path] = {}


def _checkpoint(name: str, factory) -> Path:
    """One synthetic official-layout checkpoint per name for the whole session (mmdet 0.6:
    backbone.*, neck.*, a head, meta)."""
    if name not in _SHARED:
        import torch

        from ssi_deploy.models import create_model

        arch, fpn = CHECKPOINTS[name]
        sd = dict(create_model(arch, with_fpn=fpn, init_seed=1).state_dict())
        if not any(k.startswith("bbox_head.") for k in sd):  # a backbone: one head key
            sd["bbox_head.fc_cls.weight"] = torch.zeros(81, 1024)
        path = factory.mktemp("checkpoint") / name
        torch.save({"state_dict": sd, "meta": {"mmdet_version": "0.6.0"}}, path)
        _SHARED[name] = path
    return _SHARED[name]


def _photo(dest: Path) -> None:
    data = pytest.importorskip("skimage.data", reason="the demo's photograph comes from "
                               "scikit-image (the dev and demo extras)")
    import cv2

    dest.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(dest), cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR))


class DocRun:
    """A document's commands in order, in one folder; each runs once, when first needed."""

    def __init__(self, doc: str, factory):
        self.items = [it for it in ITEMS if it.doc == doc]
        self.dir = factory.mktemp(re.sub(r"\W", "_", doc))
        self.factory = factory
        self.results: dict[int, tuple[bool, str]] = {}
        self.prepared = False

    def _prepare(self) -> None:
        if self.prepared:
            return
        text = "\n".join(it.text for it in self.items if it.kind in ("cli", "python"))
        for name in CHECKPOINTS:
            if name in text:
                (self.dir / name).symlink_to(_checkpoint(name, self.factory))
        if PHOTO in text:
            _photo(self.dir / PHOTO)
        self.prepared = True

    def _execute(self, it: Item) -> tuple[bool, str]:
        cwd = self.dir
        if it.kind == "cli":
            argv = _cli() + it.argv
        elif it.kind == "script":
            argv = [sys.executable, *it.argv]
        elif it.kind == "python":
            script = self.dir / f"block_{it.line}.py"
            script.write_text(it.argv[0])
            argv = [sys.executable, str(script)]
        elif it.kind == "activate":
            if not (ROOT / ".venv" / "bin" / "activate").is_file():
                pytest.skip("no .venv in this checkout (make demo / make test create it)")
            argv, cwd = ["bash", "-c", ". .venv/bin/activate && command -v ssi-deploy"], ROOT
        else:  # shell utilities (mkdir)
            argv = it.argv
        if it.subs:
            ran = it.argv[0] if it.kind == "python" else shlex.join(argv)
            print(f"{it.doc}:{it.line}: {it.text}\n  substituted ({'; '.join(it.subs)}):\n"
                  + "".join(f"    {line}\n" for line in ran.splitlines()), end="")
        t0 = time.perf_counter()
        p = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True,
                           timeout=600)
        took = time.perf_counter() - t0
        log = (f"$ {shlex.join(argv)}\n(exit {p.returncode}, {took:.1f} s)\n"
               f"--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}")
        print(f"{it.doc}:{it.line}: exit {p.returncode} in {took:.1f} s")
        ok = p.returncode in it.expect
        if ok and it.kind == "activate":
            want = ROOT / ".venv" / "bin" / "ssi-deploy"
            ok = Path(p.stdout.strip()) == want
            log += f"\nexpected ssi-deploy at {want}"
        m = re.match(r"(\d+\.\d+)\b", it.comment)
        if ok and it.kind == "cli" and it.argv[:1] == ["flops"] and m:
            ok = m.group(1) in p.stdout
            log += f"\nthe comment says {m.group(1)}"
        return ok, log

    def run(self, it: Item) -> tuple[bool, str]:
        self._prepare()
        for prev in self.items[: self.items.index(it)]:
            if prev.kind not in ("skip", "unknown", "activate") and id(prev) not in self.results:
                self.results[id(prev)] = self._execute(prev)
        failed = [p for p in self.items[: self.items.index(it)]
                  if not self.results.get(id(p), (True,))[0]]
        if id(it) not in self.results:
            self.results[id(it)] = self._execute(it)
        ok, log = self.results[id(it)]
        if not ok and failed:
            log += "\n(earlier commands of this document failed: " + ", ".join(
                f"line {p.line}" for p in failed) + ")"
        return ok, log


_RUNS: dict[str, DocRun] = {}


@pytest.mark.slow  # all of them together: two to three minutes on 2 cores
@pytest.mark.parametrize("item", ITEMS, ids=[it.id for it in ITEMS])
def test_doc_command(item: Item, tmp_path_factory):
    if item.kind == "skip":
        pytest.skip(f"{item.doc}:{item.line}: {item.reason}")
    assert item.kind != "unknown", (
        f"{item.doc}:{item.line}: {item.text!r}: {item.reason}; run it here or teach "
        "tests/test_docs_commands.py why it cannot run (a skip with its reason)")
    run = _RUNS.setdefault(item.doc, DocRun(item.doc, tmp_path_factory))
    ok, log = run.run(item)
    want = " or ".join(map(str, item.expect))
    assert ok, f"{item.doc}:{item.line}: `{item.text}` (expected exit {want})\n{log}"


def test_docs_commands_are_collected():
    """The parser sees the docs' commands (a fence or continuation it misreads would drop
    them silently), every substitution still applies somewhere, and every checkpoint a doc
    names is one the test can make."""
    by_doc = {d.relative_to(ROOT).as_posix(): [it for it in ITEMS if it.doc ==
                                               d.relative_to(ROOT).as_posix()] for d in DOCS}
    readme = [it.text for it in by_doc["README.md"]]
    assert "make demo" in readme and ". .venv/bin/activate" in readme
    assert any(t.startswith("ssi-deploy export ") and t.endswith("--output ssi.onnx")
               for t in readme)  # the continuation line joined
    assert sum(it.kind == "python" for it in by_doc["README.md"]) == 1
    assert not [it.id for it in ITEMS if it.kind == "unknown"]
    used = {s for it in ITEMS for s in it.subs}
    for _, pattern, repl in SUBSTITUTIONS:
        assert f"{pattern} -> {repl}" in used, f"substitution {pattern} is no longer used"
    named = {t for it in ITEMS for t in re.findall(r"[\w./-]+\.pth\b", it.text)}
    assert named <= set(CHECKPOINTS), f"docs name checkpoints the test cannot make: {named}"
    for it in ITEMS:  # the synthetic checkpoint fits the substituted commands
        if it.kind == "cli" and "--checkpoint" in it.argv and "--arch" in it.argv:
            ck = it.argv[it.argv.index("--checkpoint") + 1]
            arch = it.argv[it.argv.index("--arch") + 1]
            ck_arch, fpn = CHECKPOINTS[ck]
            if ck_arch.startswith("faster_rcnn_"):  # a detector file: backbones ignore heads
                assert arch in (ck_arch, ck_arch.removeprefix("faster_rcnn_")), it.id
            else:
                assert (ck_arch, fpn) == (arch, "--with-fpn" in it.argv), it.id
