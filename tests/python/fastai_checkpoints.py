"""Real fastai checkpoints for the tests, written by fastai itself, with fastai kept out of choripan.

`ensure_site()` installs a pinned fastai into build/fastai-site (once: a folder whose pins match is
reused). `write()` runs this file in a child Python whose PYTHONPATH puts that folder before the project
environment, so fastai runs on the project's own torch and torchvision. The child trains a
`vision_learner` on scikit-image's photos, saves it with `learn.save` and records what fastai's model
answers on real preprocessed photos; the test process itself never imports fastai.

    python tests/python/fastai_checkpoints.py OUT ARCH...
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "build" / "fastai-site"

# fastai 2.8.12 and what `import fastai.vision.all` needs beyond the project environment (torch,
# torchvision, numpy, pillow, scipy, packaging, pygments). fastai.vision imports matplotlib, pandas and
# scikit-learn at import time, so they come too; spaCy (fastai.text only) does not. fastprogress stays at
# 1.0.3 because 1.1 imports python-fasthtml. Every version has wheels for CPython 3.10 to 3.13.
PINS = (
    "fastai==2.8.12",
    "fastcore==2.2.41",
    "fasttransform==0.0.5",
    "fastprogress==1.0.3",
    "fastdownload==0.0.8",
    "plum-dispatch==2.5.8",
    "beartype==0.22.9",
    "rich==14.2.0",
    "markdown-it-py==3.0.0",
    "mdurl==0.1.2",
    "typing-extensions==4.15.0",
    "matplotlib==3.10.7",
    "contourpy==1.3.2",
    "cycler==0.12.1",
    "fonttools==4.60.1",
    "kiwisolver==1.4.9",
    "pyparsing==3.2.5",
    "python-dateutil==2.9.0.post0",
    "six==1.17.0",
    "pandas==2.3.3",
    "pytz==2025.2",
    "tzdata==2025.2",
    "scikit-learn==1.7.2",
    "joblib==1.5.2",
    "threadpoolctl==3.6.0",
    "pyyaml==6.0.3",
    "requests==2.32.5",
    "urllib3==2.5.0",
    "idna==3.11",
    "charset-normalizer==3.4.4",
    "certifi==2025.10.5",
    "cloudpickle==3.1.1",
)
_STAMP = ".pins"

# Photos and what they show: fastai trains on them, so every class needs one.
PHOTOS = {
    "chelsea.png": "cat",
    "coffee.png": "espresso",
    "rocket.jpg": "rocket",
    "astronaut.png": "astronaut",
    "motorcycle_left.png": "motorcycle",
    "horse.png": "horse",
}


def ensure_site(site: Path = SITE) -> Path:
    """A folder holding exactly PINS (without their dependencies: the project environment has those)."""
    wanted = "\n".join(PINS) + "\n"
    if (site / _STAMP).is_file() and (site / _STAMP).read_text() == wanted:
        return site
    site.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{site.name}.", dir=site.parent))
    try:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
        command += ["--only-binary=:all:", "--target", str(partial), *PINS]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"pip could not install fastai's test environment:\n{done.stderr[-4000:]}")
        (partial / _STAMP).write_text(wanted)
        shutil.rmtree(site, ignore_errors=True)
        try:
            partial.rename(site)
        except OSError:  # another run installed it meanwhile
            if not ((site / _STAMP).is_file() and (site / _STAMP).read_text() == wanted):
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return site


def write(out: Path, archs: list[str], site: Path = SITE) -> Path:
    """Run this file under fastai; returns `out`, holding `<arch>.pth` (learn.save), `<arch>-weights.pth`
    (with_opt=False) and `expected.pt` (inputs, labels, and fastai's logits and probabilities per arch)."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["MPLCONFIGDIR"] = str(out / "matplotlib")  # matplotlib's font cache, not in the home folder
    done = subprocess.run(
        [sys.executable, __file__, str(out), *archs], env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(f"fastai could not write the checkpoints:\n{done.stdout[-2000:]}\n{done.stderr[-6000:]}")
    return out


def _main(out: Path, archs: list[str]) -> None:
    import fastai
    import torch
    import torchvision
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        ImageBlock,
        Normalize,
        Resize,
        imagenet_stats,
        set_seed,
        vision_learner,
    )

    from choripan.imaging import Preprocessing, load_batch
    from choripan.photos import data_dir, reference_photos

    set_seed(0, reproducible=True)  # before the DataLoaders, which draw their own generator for shuffling
    photos = [data_dir() / name for name in PHOTOS]
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_y=lambda path: PHOTOS[path.name],
        splitter=lambda items: (list(range(len(PHOTOS))), list(range(len(PHOTOS), len(items)))),
        item_tfms=Resize(64),
        batch_tfms=Normalize.from_stats(*imagenet_stats),
    )
    dls = block.dataloaders(photos * 2, bs=3, num_workers=0)
    inputs = load_batch(reference_photos(), Preprocessing(mean=tuple(imagenet_stats[0]), std=tuple(imagenet_stats[1])))
    expected = {
        "inputs": inputs,
        "labels": list(dls.vocab),
        "versions": {
            "fastai": fastai.__version__,
            "torch": str(torch.__version__),
            "torchvision": torchvision.__version__,
        },
    }
    for arch in archs:
        set_seed(0, reproducible=True)  # weights and dropout: every run writes the same checkpoints
        learn = vision_learner(dls, getattr(torchvision.models, arch), pretrained=False, path=out, model_dir=".")
        learn.fit_one_cycle(1, lr_max=1e-3)
        _calibrate_batch_norms(learn.model, inputs)
        learn.save(arch)
        learn.save(f"{arch}-weights", with_opt=False)
        with torch.no_grad():
            logits = learn.model.eval()(inputs).as_subclass(torch.Tensor)
        expected[arch] = {"logits": logits, "probabilities": torch.softmax(logits, dim=1)}
    torch.save(expected, out / "expected.pt")


def _calibrate_batch_norms(model, photos) -> None:
    """Two training steps barely move BatchNorm from its initial state, and a random body's activations
    drift far from it: give every BatchNorm random scales and shifts, then the statistics of real photos,
    so that each of its numbers matters and the logits stay in a range where softmax is not saturated."""
    import torch

    generator = torch.Generator().manual_seed(1)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for norm in norms:
            norm.weight.mul_(0.5 + torch.rand(norm.num_features, generator=generator))
            norm.bias.add_(0.1 * torch.randn(norm.num_features, generator=generator))
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the calibration pass
        model.train()(photos)
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


if __name__ == "__main__":
    _main(Path(sys.argv[1]), sys.argv[2:])
