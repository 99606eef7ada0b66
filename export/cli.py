"""`python -m export …`: the command line over the library API. User errors exit 2 with one line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import ExportError


def _default(args: argparse.Namespace) -> None:
    from .sources import default
    from .tracing import export_classifier

    model, metadata = default.build()
    path = export_classifier(model, metadata, args.out)
    print(f"wrote {path} ({metadata.name}, {len(metadata.labels)} classes)")


def _inspect(args: argparse.Namespace) -> int:
    from .artifact import read_metadata, verify_checksum

    metadata = read_metadata(args.artifact)
    matches, actual = verify_checksum(args.artifact)
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
        print(f"  versions      {', '.join(f'{k} {v}' for k, v in metadata['versions'].items())}")
        print(f"  exported      {metadata['exported_at']}")
        print(f"  checksum      {'ok' if matches else 'MISMATCH'} ({actual})")
    if not matches:
        print(f"error: {args.artifact} was modified after export: its checksum does not match", file=sys.stderr)
        return 2
    return 0


def _predict(args: argparse.Namespace) -> None:
    from .predictor import Predictor

    predictor = Predictor(args.model)
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


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    default = commands.add_parser("default", help="export the default model (EfficientNet-Lite0, ImageNet-1k)")
    default.add_argument("--out", type=Path, required=True, help="artifact path, e.g. models/default.pt")
    default.set_defaults(run=_default)

    inspect = commands.add_parser("inspect", help="print an artifact's metadata and check its checksum")
    inspect.add_argument("artifact", type=Path)
    inspect.add_argument("--json", action="store_true", help="print the metadata document as JSON")
    inspect.set_defaults(run=_inspect)

    predict = commands.add_parser("predict", help="classify images with the Python reference predictor")
    predict.add_argument("--model", type=Path, required=True)
    predict.add_argument("images", type=Path, nargs="+")
    predict.add_argument("--topk", type=_positive, default=5)
    predict.add_argument("--json", action="store_true", help="one JSON object per image per line")
    predict.set_defaults(run=_predict)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
