"""The `zoo` command: `zoo list`, `zoo describe NAME`, `zoo demo`.

    $ zoo list --task classification
    $ zoo describe resnet50 --output-stride 16
    $ zoo demo
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _shape_text(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _outputs_text(model) -> str:
    return ", ".join(_shape_text(tensor.shape) for tensor in model.outputs)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _release(model) -> None:
    import keras

    del model
    keras.backend.clear_session()


def models_markdown_table() -> str:
    """The README's model table, generated from the registry (a test keeps them equal)."""
    import zoo

    lines = ["| name | task | parameters | summary |", "|---|---|---:|---|"]
    for name in zoo.list_models():
        model = zoo.build(name)
        lines.append(f"| `{name}` | {zoo.describe(name).task} | {model.count_params():,} | {zoo.describe(name).summary} |")
        _release(model)
    return "\n".join(lines)


def cmd_list(args) -> int:
    import zoo

    if args.markdown:
        print(models_markdown_table())
        return 0
    names = zoo.list_models(args.pattern, task=args.task)
    rows = []
    for name in names:
        spec = zoo.describe(name)
        row = [name, spec.task]
        if not args.no_params:
            model = zoo.build(name)
            row.append(f"{model.count_params():,}")
            _release(model)
        row.append(spec.summary)
        rows.append(row)
    header = ["name", "task"] + ([] if args.no_params else ["parameters"]) + ["summary"]
    print(_table(rows, header))
    return 0


def _parse_override(text: str):
    """`key=value` where value is a Python literal (`16`, `(224, 224, 3)`, `None`) or a word."""
    import ast

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"override {text!r} must look like key=value")
    key, value = text.split("=", 1)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return key.strip().replace("-", "_"), parsed


def cmd_describe(args) -> int:
    import zoo

    overrides = dict(args.set or [])
    description = zoo.describe(args.name)
    print(description)
    model = zoo.build(args.name, **overrides)
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    print(f"  inputs: {', '.join(f'{t.name} {_shape_text(t.shape)}' for t in model.inputs)}")
    print(f"  outputs: {_outputs_text(model)}")
    print(f"  parameters: {model.count_params():,} ({trainable:,} trainable)")
    if description.is_backbone:
        import keras

        images = keras.Input(shape=model.inputs[0].shape[1:], name="images")
        backbone_overrides = {k: v for k, v in overrides.items() if k != "include_top"}
        features = zoo.backbones.backbone_features(args.name, images, **backbone_overrides)
        print("  feature maps:")
        for key, feature in features.items():
            print(
                f"    {key}: stride {feature.stride}, {feature.channels} channels, "
                f"layer {feature.layer}, shape {_shape_text(feature.tensor.shape)}"
            )
    return 0


def cmd_demo(args) -> int:
    import zoo

    rows = []
    names = zoo.list_models(args.pattern)
    print(f"Building {len(names)} registered models with their default configuration ...", flush=True)
    for name in names:
        start = time.perf_counter()
        model = zoo.build(name)
        seconds = time.perf_counter() - start
        rows.append([name, zoo.describe(name).task, f"{model.count_params():,}", _outputs_text(model), f"{seconds:.1f}s"])
        print(f"  {name}: {seconds:.1f}s", flush=True)
        _release(model)
    print()
    print(_table(rows, ["name", "task", "parameters", "output shapes", "build time"]))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="A Keras 3 model zoo for vision.")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="registered models with task and parameters")
    listing.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'resnet*'")
    listing.add_argument("--task", choices=("classification", "detection", "segmentation"))
    listing.add_argument("--no-params", action="store_true", help="skip building models to count parameters")
    listing.add_argument("--markdown", action="store_true", help="every model as the README's markdown table")
    listing.set_defaults(run=cmd_list)

    describe = commands.add_parser("describe", help="inputs, outputs, feature maps, parameters, weights")
    describe.add_argument("name")
    describe.add_argument(
        "--set", action="append", type=_parse_override, metavar="KEY=VALUE",
        help="a config override, repeatable: --set output_stride=16 --set include_top=False",
    )
    describe.set_defaults(run=cmd_describe)

    demo = commands.add_parser("demo", help="build every registered model and print a table")
    demo.add_argument("pattern", nargs="?", default=None)
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError) as error:
        print(f"zoo {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
