"""`python -m choripan …`: the command line over the library API. User errors exit 2 with one line."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from .contract import PREDICT_OPTIONS
from .errors import ExportError, counted
from .names import NAME_RULE, check_name, name_from

_INT8_FLAGS = ("calibration_images", "check_fraction", "min_agreement", "max_prob_diff", "accuracy_data")


def _quantization(args: argparse.Namespace, calibration: Path | None = None):
    """The int8 export the flags ask for (choripan.quantize.Quantization), or None; int8's flags without
    --quantize are an error. Photos from --calibration, else from `calibration` (train's --data)."""
    from .quantize import Quantization

    given = [flag for flag in ("calibration", "max_accuracy_drop", *_INT8_FLAGS) if getattr(args, flag) is not None]
    if args.quantize is None:
        if given:
            flags = ", ".join(f"--{flag.replace('_', '-')}" for flag in given)
            raise ExportError(f"{flags}: only for an int8 export (--quantize int8)")
        return None
    calibration = args.calibration or calibration
    if calibration is None:
        raise ExportError("--quantize int8 needs --calibration DIR: photos like those the model will be shown")
    if args.max_accuracy_drop is not None and args.accuracy_data is None:
        raise ExportError("--max-accuracy-drop bounds the accuracy on --accuracy-data DIR: give the folder too")
    options = {
        flag: getattr(args, flag) for flag in ("max_accuracy_drop", *_INT8_FLAGS) if getattr(args, flag) is not None
    }
    return Quantization(calibration, **options)


def _check_export(args: argparse.Namespace) -> None:
    """The export flags agree (--out's suffix, --format, --target-cpu, --script, int8's), before anything loads."""
    from .tracing import check_export

    check_export(
        args.out,
        script=getattr(args, "script", False),
        format=args.format,
        target_cpu=args.target_cpu,
        quantization=_quantization(args),
    )


def _write(args: argparse.Namespace, model, metadata, what: str, name: str | None = None) -> None:
    """Export as the flags say, report it, sign it when asked. The model is named by --name, else `name`, else
    after the --out file."""
    from .tracing import export_classifier

    metadata.name = args.name or name or name_from(args.out)
    path = export_classifier(
        model,
        metadata,
        args.out,
        script=getattr(args, "script", False),
        format=args.format,
        target_cpu=args.target_cpu,
        quantization=_quantization(args),
    )
    int8 = ", int8" if args.quantize else ""
    print(
        f"wrote {path} ({what}{int8}, {counted(len(metadata.labels), 'class', 'classes')}, served as {metadata.name})"
    )
    _sign_if_asked(args, path)


def _default(args: argparse.Namespace) -> None:
    from .sources import default

    _check_export(args)
    model, metadata = default.build()
    _write(args, model, metadata, metadata.name, name=metadata.name)  # the architecture's, as npm install's


def _preprocessing(args: argparse.Namespace, base):
    """`base` with the --resize/--crop/--mean/--std/--interpolation the user gave."""
    import dataclasses

    overrides = {
        key: getattr(args, key)
        for key in ("resize", "crop", "mean", "std", "interpolation")
        if getattr(args, key) is not None
    }
    return dataclasses.replace(base, **overrides) if overrides else base


def _torchvision(args: argparse.Namespace) -> None:
    from .labels import parse_labels
    from .sources import torchvision as source

    labels = parse_labels(args.labels, args.labels_file)
    source.check_architecture(args.arch)
    _check_export(args)
    preprocessing = _preprocessing(args, source.preprocessing_for(args.arch))
    model, metadata = source.build(
        args.arch, args.weights, labels, trust_pickle=args.trust_pickle, preprocessing=preprocessing
    )
    _write(args, model, metadata, args.arch)


def _fastai(args: argparse.Namespace) -> None:
    from .imaging import Preprocessing
    from .labels import parse_labels
    from .sources import fastai as source

    labels = parse_labels(args.labels, args.labels_file)
    source.check_architecture(args.arch)
    _check_export(args)
    preprocessing = _preprocessing(args, Preprocessing())
    model, metadata = source.build(
        args.arch, args.checkpoint, labels, trust_pickle=args.trust_pickle, preprocessing=preprocessing
    )
    _write(args, model, metadata, f"fastai {args.arch}")


def _train(args: argparse.Namespace) -> None:
    from .train import TrainConfig, train

    config = TrainConfig(
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        seed=args.seed,
        val_fraction=args.val_fraction,
        batch_size=args.batch_size,
        format=args.format,
        target_cpu=args.target_cpu,
        name=args.name,
        quantization=_quantization(args, calibration=args.data),
    )
    report = train(config)
    classes = counted(len(report.labels), "class", "classes")
    print(f"wrote {report.artifact} ({classes}: {', '.join(report.labels)}, served as {report.name})")
    _sign_if_asked(args, report.artifact)


def _password(args: argparse.Namespace) -> bytes | None:
    if not args.password_env:
        return None
    if args.password_env not in os.environ:
        raise ExportError(f"--password-env names {args.password_env}, which is not set")
    return os.environ[args.password_env].encode()


def _sign_if_asked(args: argparse.Namespace, artifact: Path) -> None:
    if args.sign_key is not None:
        from .signing import sign

        print(f"wrote {sign(artifact, args.sign_key, _password(args))}")


def _sign(args: argparse.Namespace) -> None:
    from .signing import sign

    print(f"wrote {sign(args.artifact, args.key, _password(args))}")


def _trusted_keys(args: argparse.Namespace) -> list[Path]:
    from .signing import trusted_keys_from_environment

    return args.trusted_key or trusted_keys_from_environment()


def _verify(args: argparse.Namespace) -> None:
    from .signing import verified_digest

    keys = _trusted_keys(args)
    if not keys:
        raise ExportError("verify needs --trusted-key PUBLIC_KEY (or CHORIPAN_TRUSTED_KEYS)")
    digest = verified_digest(args.artifact, keys, args.signature)
    print(f"{args.artifact}: signed by a trusted key (sha256 {digest})")


def _inspect(args: argparse.Namespace) -> int:
    from .artifact import read_metadata, verify_checksum

    metadata = read_metadata(args.artifact)
    try:
        return _show(args, metadata, *verify_checksum(args.artifact))
    except (KeyError, TypeError) as error:
        raise ExportError(f"{args.artifact} has incomplete metadata: {error!r} is missing", "E_MODEL_LOAD") from error


def _show(args: argparse.Namespace, metadata: dict, matches: bool, actual: str) -> int:
    if args.json:
        print(json.dumps({"metadata": metadata, "checksum_ok": matches}, indent=1))
    else:
        pre = metadata["preprocessing"]
        labels = metadata["labels"]
        shown = ", ".join(labels[:5]) + (f", … ({len(labels)} in all)" if len(labels) > 5 else "")
        print(f"{args.artifact}")
        print(f"  name          {metadata['name']} (format {metadata['format']} v{metadata['format_version']})")
        print(f"  source        {metadata['source']['kind']}: {metadata['source']['arch']}")
        print(f"  labels        {shown}")
        print(f"  input         {metadata['input']['shape']} {metadata['input']['dtype']}")
        print(f"  output        {metadata['output']['kind']} {metadata['output']['shape']}")
        print(f"  preprocessing resize {pre['resize']}, crop {pre['crop']}, mean {pre['mean']}, std {pre['std']}")
        runtime = metadata.get("runtime", {"format": "torchscript"})
        isa = f" compiled for {runtime['cpu_isa']}" if "cpu_isa" in runtime else ""
        models = runtime.get("models", {})
        held = [name for name, model in models.items() if "onednn_max_cpu_isa" in model]  # a second packing
        packed = (
            f", {' and '.join(held)} packed for oneDNN's {models[held[0]]['onednn_max_cpu_isa']} kernels"
            if held
            else ""
        )
        print(f"  runtime       {runtime['format']}{isa}{packed}")
        if "quantization" in metadata:
            print(f"  quantization  {_quantization_line(metadata['quantization'])}")
        print(f"  versions      {', '.join(f'{k} {v}' for k, v in metadata['versions'].items())}")
        print(f"  exported      {metadata['exported_at']}")
        print(f"  checksum      {'ok' if matches else 'MISMATCH'} ({actual})")
    if not matches:
        print(f"error: {args.artifact} was modified after export: its checksum does not match", file=sys.stderr)
        return 2
    return 0


def _quantization_line(q: dict) -> str:
    """What an int8 package cost, as its export measured it on photos held out from calibration."""
    line = (
        f"{q['scheme']}: top-1 agreement {q['top1_agreement']:.4f} with float32, largest probability difference "
        f"{q['max_prob_diff']:.4f} on {q['checked_images']} held-out photos (calibrated on {q['calibration_images']})"
    )
    if "accuracy" in q:
        line += f"; accuracy {q['accuracy']:.4f} (float32 {q['fp32_accuracy']:.4f})"
    return line


def _predict(args: argparse.Namespace) -> None:
    from .predictor import Predictor
    from .signing import verified_digest

    keys = _trusted_keys(args)
    predictor = Predictor(args.model, sha256=verified_digest(args.model, keys) if keys else None)
    for image in args.images:
        result = {"file": str(image), **predictor.predict(image, topk=args.topk)}
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(f"{image}: {result['label']} ({result['probability']:.3f})")
            for entry in result["top"][1:]:
                print(f"  {entry['label']} ({entry['probability']:.3f})")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers (R,G,B), got {text}")
    return values


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def _model_name(text: str) -> str:
    try:
        return check_name(text)
    except ExportError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _add_name_argument(command: argparse.ArgumentParser, default: str) -> None:
    command.add_argument(
        "--name",
        type=_model_name,
        help=f'the model\'s name where it is served (/v2/models/NAME, "model" in answers): {NAME_RULE} '
        f"(default: {default})",
    )


def _add_format_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--format",
        choices=["torchscript", "aoti"],
        help="torchscript (a frozen trace, *.pt) or aoti (an AOTInductor package compiled for this CPU, *.pt2; "
        "the fastest on the CPU); by default the --out suffix decides",
    )
    command.add_argument(
        "--target-cpu",
        choices=["native", "x86-64-v3", "x86-64-v4"],
        default="native",
        help="the CPU a .pt2 package is compiled for: this machine's (native, the default and the fastest here), "
        "or every x86-64 CPU with AVX2 and FMA (x86-64-v3) or with AVX-512 (x86-64-v4); x86-64-v3 compiled on "
        "a CPU with AVX-512 packs its batch-1 and batch-2 models' weights for both kinds of CPU (+42 MB)",
    )


def _add_quantize_arguments(command: argparse.ArgumentParser, calibration: str) -> None:
    from .quantize import SCHEMES, Quantization

    int8 = command.add_argument_group(
        "int8 (an AOTInductor package; needs the [int8] extra). Some calibration photos are held out to check "
        "the result against the float32 model; past a bound, nothing is written"
    )
    int8.add_argument("--quantize", choices=SCHEMES, help="quantize to int8: PT2E static quantization for x86 CPUs")
    int8.add_argument(
        "--calibration", type=Path, metavar="DIR", help=f"photos to calibrate and check on ({calibration})"
    )
    int8.add_argument(
        "--calibration-images",
        type=int,
        metavar="N",
        help=f"at most N photos from DIR, drawn at random (default {Quantization.calibration_images})",
    )
    int8.add_argument(
        "--check-fraction",
        type=float,
        metavar="F",
        help=f"the share held out to check on (default {Quantization.check_fraction})",
    )
    int8.add_argument(
        "--min-agreement",
        type=float,
        metavar="F",
        help=f"least share of checked photos with float32's top-1 (default {Quantization.min_agreement})",
    )
    int8.add_argument(
        "--max-prob-diff", type=float, metavar="F", help="largest probability difference allowed (default: none)"
    )
    int8.add_argument(
        "--accuracy-data", type=Path, metavar="DIR", help="labelled photos (DIR/<label>/*.jpg) to measure accuracy on"
    )
    int8.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="F",
        help=f"largest accuracy lost on --accuracy-data (default {Quantization.max_accuracy_drop})",
    )


def _add_signing_arguments(command: argparse.ArgumentParser, key_flag: str = "--sign-key") -> None:
    command.add_argument(
        key_flag,
        type=Path,
        required=key_flag == "--key",
        help="an elliptic-curve private key (PEM) to sign the artifact with: writes ARTIFACT.sig beside it "
        "(OpenSSF model signing; needs the [sign] extra)",
    )
    command.add_argument(
        "--password-env", metavar="VARIABLE", help="the environment variable holding the key's password"
    )


def _add_trust_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--trusted-key",
        type=Path,
        action="append",
        help="a public key (PEM) whose signature (ARTIFACT.sig) the model must carry; repeatable "
        "(default: the files CHORIPAN_TRUSTED_KEYS lists, comma-separated)",
    )


def _add_model_arguments(command: argparse.ArgumentParser, weights_flag: str, weights_help: str) -> None:
    command.add_argument("--arch", required=True, help="a torchvision classification architecture, e.g. resnet34")
    command.add_argument(weights_flag, type=Path, required=True, help=weights_help)
    labels = command.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help="class names in class-index order, comma-separated")
    labels.add_argument("--labels-file", type=Path, help="a file with one class name per line")
    command.add_argument("--out", type=Path, required=True, help="artifact path, e.g. models/choripan.pt")
    _add_name_argument(command, "the --out file's name without its suffix")
    _add_format_argument(command)
    _add_quantize_arguments(command, "required with --quantize")
    _add_signing_arguments(command)
    command.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow a checkpoint that is a pickled Python object (torch.save(model)); unpickling runs its code",
    )
    command.add_argument(
        "--script",
        action="store_true",
        help="script the model instead of tracing it: for forwards with Python control flow (vit_*, swin_*)",
    )
    tuning = command.add_argument_group("preprocessing (defaults: what the architecture's weights use)")
    tuning.add_argument("--resize", type=_positive, help="shorter side before the centre crop")
    tuning.add_argument("--crop", type=_positive, help="centre crop size")
    tuning.add_argument("--mean", type=_triple, help="per-channel mean on [0, 1] pixels, R,G,B")
    tuning.add_argument("--std", type=_triple, help="per-channel standard deviation, R,G,B")
    tuning.add_argument("--interpolation", choices=["bilinear", "bicubic"])


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line that says where to read more, exit status 2 (as `choripan`, the Node command).

    Arguments a command does not take are its own error (argparse leaves them to the top parser), with the
    option meant where one is close (`--jsno`: `--json`)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            command = getattr(parsed, "parser", self)
            close = [
                match
                for given in unknown
                for match in difflib.get_close_matches(given.split("=")[0], command._option_string_actions, 1, 0.75)
                if given.startswith("--")
            ]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            command.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
        return parsed


def parser() -> argparse.ArgumentParser:
    root = _Parser(prog="python -m choripan", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    default = commands.add_parser("default", help="export the default model (EfficientNet-Lite0, ImageNet-1k)")
    default.add_argument("--out", type=Path, required=True, help="artifact path, e.g. models/default.pt")
    _add_name_argument(default, "efficientnet-lite0")
    _add_format_argument(default)
    _add_quantize_arguments(default, "required with --quantize")
    _add_signing_arguments(default)
    default.set_defaults(run=_default)

    torchvision = commands.add_parser(
        "torchvision", help="export a torchvision architecture with weights from a checkpoint"
    )
    _add_model_arguments(torchvision, "--weights", "a state_dict, or a dict holding one under 'state_dict' or 'model'")
    torchvision.set_defaults(run=_torchvision)

    fastai = commands.add_parser("fastai", help="export a fastai vision_learner model saved with Learner.save")
    _add_model_arguments(fastai, "--checkpoint", "the file Learner.save wrote (models/<name>.pth)")
    fastai.set_defaults(run=_fastai)

    train = commands.add_parser(
        "train", help="train a new head on the default pretrained body from an image folder, then export"
    )
    train.add_argument("--data", type=Path, required=True, help="an image folder: DIR/<label>/*.jpg")
    train.add_argument("--out", type=Path, required=True, help="artifact path, e.g. models/choripan.pt")
    _add_name_argument(train, "the --out file's name without its suffix")
    _add_format_argument(train)
    _add_quantize_arguments(train, "default: the --data folder")
    _add_signing_arguments(train)
    train.add_argument("--epochs", type=_positive, default=6, help="epochs of head training (default 6)")
    train.add_argument(
        "--fine-tune-epochs", type=int, default=0, help="epochs of whole-network fine-tuning after (default 0)"
    )
    train.add_argument("--seed", type=int, default=0, help="the same seed gives the same model (default 0)")
    train.add_argument("--val-fraction", type=_fraction, default=0.2, help="held out per label (default 0.2)")
    train.add_argument("--batch-size", type=_positive, default=16)
    train.set_defaults(run=_train)

    inspect = commands.add_parser("inspect", help="print an artifact's metadata and check its checksum")
    inspect.add_argument("artifact", type=Path)
    inspect.add_argument("--json", action="store_true", help="print the metadata document as JSON")
    inspect.set_defaults(run=_inspect)

    predict = commands.add_parser("predict", help="classify images with the Python reference predictor")
    predict.add_argument("--model", type=Path, required=True)
    predict.add_argument("images", type=Path, nargs="+")
    predict.add_argument("--topk", type=_positive, default=PREDICT_OPTIONS["topK"]["default"])
    predict.add_argument("--json", action="store_true", help="one JSON object per image per line")
    _add_trust_arguments(predict)
    predict.set_defaults(run=_predict)

    sign = commands.add_parser("sign", help="sign an artifact (OpenSSF model signing): writes ARTIFACT.sig")
    sign.add_argument("artifact", type=Path)
    _add_signing_arguments(sign, "--key")
    sign.set_defaults(run=_sign)

    verify = commands.add_parser("verify", help="check an artifact's signature against trusted public keys")
    verify.add_argument("artifact", type=Path)
    _add_trust_arguments(verify)
    verify.add_argument("--signature", type=Path, help="the signature file (default: ARTIFACT.sig)")
    verify.set_defaults(run=_verify)
    for command in commands.choices.values():
        command.set_defaults(parser=command)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        status = args.run(args) or 0
        sys.stdout.flush()  # here, where a reader that has gone (`| head`) is caught, not at exit
        return status
    except ExportError as error:
        print(f"error: {error} ({error.code})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # What reads stdout stopped reading (`inspect --json | head -c 10`): nothing to say, and Python must
        # not try to flush the rest at exit. 128 + SIGPIPE, as a command the signal stopped reports.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
