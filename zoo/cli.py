"""The `zoo` command: `zoo list|describe|train|evaluate|predict|inspect|export|demo`.

    $ zoo list --task classification
    $ zoo describe resnet50 --set output_stride=16
    $ zoo train resnet18 --dataset synthetic --image-size 64 64 --epochs 5 --out runs/r18
    $ zoo evaluate resnet18 --weights runs/r18/model.keras --dataset synthetic --split val
    $ zoo train fast_rcnn_resnet50 --dataset voc:VOCdevkit/VOC2007 --image-size 448 448 --out runs/frcnn
    $ zoo evaluate fast_rcnn_resnet50 --weights runs/frcnn/model.keras --dataset voc:VOCdevkit/VOC2007 --split test \
          --image-size 448 448
    $ zoo train faster_rcnn_resnet50 --dataset synthetic:800 --image-size 128 128 --out runs/faster
    $ zoo predict fast_rcnn_resnet50 --weights runs/frcnn/model.keras street.jpg --out predictions/
    $ zoo predict deeplabv3plus_resnet50 --weights runs/deeplab/model.keras street.jpg --out masks/
    $ zoo inspect vgg16 photo.jpg --layers block1_conv2 block1_pool --out fig.png --receptive-field block5_conv3
    $ zoo export resnet50 --weights imagenet --out exports/resnet50 --fold-batch-norm
    $ zoo train deeplabv3plus_resnet50 --dataset synthetic:256 --image-size 65 65 --out runs/deeplab
    $ zoo evaluate deeplabv3plus_resnet50 --weights runs/deeplab/model.keras --dataset synthetic:64 \
          --image-size 65 65 --eval-scales 0.75 1 1.25 --add-flipped-images
    $ zoo demo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# TensorFlow is imported inside the verbs that need it: `zoo --help`, `zoo VERB --help`, `zoo list`
# and `zoo describe MODEL` read `zoo.catalogue` and answer in a fraction of a second.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def models_markdown_table() -> str:
    """The README's model table, from `zoo.catalogue` (a test keeps them equal)."""
    from zoo import catalogue

    return catalogue.markdown_table()


def cmd_list(args) -> int:
    from zoo import catalogue

    if args.markdown:
        print(models_markdown_table())
        return 0
    rows = []
    for name in catalogue.names(args.pattern, task=args.task):
        entry = catalogue.stored_entry(name)
        row = [name, entry["task"]]
        if not args.no_params:
            row.append(f"{entry['parameters']:,}")
        row.append(entry["summary"])
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
    """The catalogue's entry (nothing built); with --set, the model built with the overrides."""
    from zoo import catalogue

    overrides = dict(args.set or [])
    entry = catalogue.stored_entry(args.name)
    if overrides:
        description, built = catalogue.build_entry(args.name, **overrides)
        entry = {**description, **built}
    print(catalogue.render(args.name, entry))
    return 0


def cmd_demo(args) -> int:
    from zoo.demo import run_demo

    run_demo(args.out, quick=args.quick)
    return 0


def load_keras_file(path, *, option="--weights"):
    """`keras.saving.load_model(path, safe_mode=True, compile=False)` for the CLI: a missing,
    truncated or foreign file is a ValueError naming `option` and the file (Keras reports a
    cut-short zip as "File not found"), never a traceback. No verb but `train` needs the
    training state, and leaving it out means a `model.keras` from `zoo train` loads in a new
    process that has not imported `training` (whose schedule and loss its optimizer names)."""
    import zipfile

    import keras

    import zoo
    from zoo.weights import file_problem

    zoo.load_models()  # registers the zoo's and training's objects that the file names

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{option} {path}: no such file")
    problem = file_problem(path)
    if problem:
        raise ValueError(f"{option} {path} cannot be read as a .keras file (truncated or not a Keras file? "
                         f"{problem})")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{option} {path} is not a model Keras can load: {reason}") from None


def _refuse_file_as_out(out, holds) -> None:
    """`--out` is a directory the command writes `holds` into: an existing file there is a mistake."""
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out} is a file; give a directory, which will hold {holds}")


def _inspected_model(args, image_shape):
    """`args.model` as a `.keras` file, or the registered model built for the image's size."""
    import zoo

    if str(args.model).endswith(".keras"):
        return load_keras_file(args.model, option="model")
    overrides = dict(args.set or [])
    if zoo.describe(args.model).task == "classification":
        # Without the top, any image size goes through; the feature maps are the same layers.
        overrides = {"include_top": False, "input_shape": image_shape, **overrides}
    return zoo.build(args.model, weights=args.weights, **overrides)


def cmd_inspect(args) -> int:
    import cv2

    import zoo

    if not args.layers and not args.receptive_field:
        raise ValueError("nothing to inspect: give --layers (with --out) and/or --receptive-field")
    if args.layers and not args.out:
        raise ValueError("--layers draws feature maps: give --out FIG.png too")
    image = cv2.imread(str(args.image), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"image {args.image}: not a readable image file")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    model = _inspected_model(args, image.shape)
    for layer in args.receptive_field or []:
        field = zoo.inspect.receptive_field(model, layer)
        print(
            f"{layer}: receptive field {field.size[0]}x{field.size[1]} px, stride {field.stride[0]}x{field.stride[1]}, "
            f"first centre at ({field.start[0]:g}, {field.start[1]:g}), padding ({field.padding[0]:g}, {field.padding[1]:g})"
        )
    if args.layers:
        figure = zoo.inspect.feature_maps(model, image, args.layers, max_channels=args.max_channels)
        path = zoo.inspect.save_figure(figure, args.out)
        print(f"zoo inspect: feature maps of {len(args.layers)} layer(s) written to {path}", file=sys.stderr)
    return 0


def _class_names(args, run=None):
    """`--classes a,b,c`, else the class names the model was trained with (`run`), else None;
    `--classes` that contradicts the run's is an error."""
    from zoo.runs import settle

    given = tuple(name.strip() for name in args.classes.split(",") if name.strip()) if args.classes else None
    return settle("--classes", given, run and run.class_names, source=run and run.source)


def _trained_run(args):
    """The run recorded beside `--weights` (`zoo.runs.trained_run`), checked against the model name."""
    from zoo.runs import trained_run

    run = trained_run(args.weights)
    if run is not None and run.model and run.model != args.model:
        raise ValueError(f"model {args.model} but --weights {args.weights} is a {run.model} (from {run.source})")
    return run


def _read_dataset(args, *, split, classes, task, image_size):
    from training import data

    return data.parse_dataset_spec(
        args.dataset, split=split, classes=classes, image_size=tuple(image_size), seed=args.seed, task=task,
        images=args.images,
    )


def _builder(name, image_size, overrides, task="classification"):
    import zoo

    # Every model counts the dataset's classes (README, "Class counts"): `classes` for a
    # classifier (keras.applications' name), `num_classes` for a detector or a segmenter, which
    # add their background class themselves.
    count = "classes" if task == "classification" else "num_classes"

    def build(num_classes):
        return zoo.build(name, **{count: num_classes}, input_shape=(*image_size, 3), **overrides)

    return build


def _run_proposals(args, image_size, run):
    """The sliding windows of a detector with a `rois` input: the flags, else the run's, else
    the image size's defaults; a flag that contradicts the run's is an error."""
    from zoo.detection.sizing import proposal_options
    from zoo.runs import settle

    stored = (run and run.proposals) or {}
    source = run and run.source
    return proposal_options(
        image_size,
        stride=settle("--proposal-stride", args.proposal_stride, stored.get("stride"), source=source),
        scales=settle("--proposal-scales", args.proposal_scales, stored.get("scales"), source=source),
        aspect_ratios=settle("--proposal-ratios", args.proposal_ratios, stored.get("aspect_ratios"), source=source),
    )


def _detection_options(args, image_size, *, training, rpn=False, rois_per_image=None, run=None):
    """The detection task's options: proposals (and, to train, the RoI sampling)."""
    if rpn:
        # The detector's RPN makes the proposals; only the sampling is the trainer's.
        return {"rois_per_image": rois_per_image, "seed": args.seed} if training else None
    options = _run_proposals(args, image_size, run)
    print(
        f"proposals: sliding windows every {options['stride']} px, sides {options['scales']}, "
        f"aspect ratios {options['aspect_ratios']}", file=sys.stderr,
    )
    from zoo.detection.sizing import sliding_window_proposals

    task_options = {"proposals": sliding_window_proposals(**options)}
    if training:
        task_options.update(rois_per_image=rois_per_image, seed=args.seed)
    return task_options


def _augmentation(recipe_augmentation, disabled, flip=True):
    """False with --no-augment; the recipe's: DeepLab's (scale 0.5 to 2, mean padding, flips)
    or the trainer's standard one (True); without horizontal flips with --no-flip."""
    if disabled:
        return False
    augmentation = True
    if recipe_augmentation == "deeplab":
        from training.segmentation import DEEPLAB_AUGMENTATION

        augmentation = dict(DEEPLAB_AUGMENTATION)
    if not flip:
        augmentation = {**(augmentation if isinstance(augmentation, dict) else {}), "flip_probability": 0.0}
    return augmentation


def _train_image_size(args, description):
    """`--image-size`, else the model's own training size (`zoo describe`), said in the log."""
    if args.image_size:
        return tuple(args.image_size)
    size = tuple(description.image_size)
    print(f"image size: {size[0]} x {size[1]}, {description.name}'s own (--image-size H W for another)",
          file=sys.stderr)
    return size


def _augmentation_text(args, settings) -> str:
    if args.no_augment:
        return "no augmentation"
    flips = ("no horizontal flips (--no-flip)" if args.no_flip else
             "horizontal flips (--no-flip for digits, text and other data a mirror changes)")
    return f"{settings['augmentation']} augmentation with {flips}"


def _recipe_settings(args, recipe):
    """The run's optimisation settings: the model's recipe, with every flag the user gave on top."""
    settings = recipe.resolve(
        epochs=args.epochs, optimizer=args.optimizer, learning_rate=args.lr, schedule=args.schedule,
        batch_size=args.batch_size, warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay,
        batch_norm=args.batch_norm, rois_per_image=args.rois_per_image,
    )
    decay = "the backbone's" if settings["weight_decay"] is None else f"{settings['weight_decay']:g}"
    rois = f", {settings['rois_per_image']} RoIs per image" if settings["rois_per_image"] else ""
    given = f" (from your flags: {', '.join(settings['given'])})" if settings["given"] else ""
    print(
        f"recipe: {settings['optimizer']} lr {settings['learning_rate']:g}, {settings['schedule']} schedule, warm-up "
        f"{settings['warmup_epochs']:g} epochs, batch {settings['batch_size']}, weight decay {decay}, batch norm "
        f"{settings['batch_norm']}{rois}, {_augmentation_text(args, settings)}, "
        f"precise batch norm over {args.precise_bn} batches{given}; "
        f"see `zoo describe {args.model}`", file=sys.stderr,
    )
    return settings


def cmd_train(args) -> int:
    import zoo
    from training import TrainConfig, TrainingDiverged, train
    from zoo.detection.sizing import detector_overrides, has_rpn

    _refuse_file_as_out(args.out, "the run (model.keras, run.json, backup/)")
    description = zoo.describe(args.model)
    task = description.task
    image_size = _train_image_size(args, description)
    settings = _recipe_settings(args, description.recipe)
    config = TrainConfig(
        epochs=args.epochs, batch_size=settings["batch_size"], image_size=image_size,
        resize=args.resize or description.resize,
        optimizer=settings["optimizer"], learning_rate=settings["learning_rate"], schedule=settings["schedule"],
        warmup_epochs=settings["warmup_epochs"], momentum=settings["momentum"],
        weight_decay=settings["weight_decay"], batch_norm=settings["batch_norm"], precise_bn=args.precise_bn,
        freeze_stages=args.freeze_stages or 0,
        augment=_augmentation(settings["augmentation"], args.no_augment, flip=not args.no_flip),
        early_stopping_patience=args.early_stopping, mixed_precision=args.mixed_precision,
        jit_compile=args.jit_compile, strategy=args.strategy,
        adversarial_epsilon=args.adversarial_epsilon, seed=args.seed,
    )
    tuning = None
    if args.weights:  # zoo.finetune: the paper's frozen layers, unless --freeze-stages / --batch-norm say
        from zoo.finetune import fine_tuning

        tuning = fine_tuning(args.model, args.weights, overrides=dict(args.set or []), freeze_stages=args.freeze_stages,
                             batch_norm=args.batch_norm, list_names=args.weights_report)
        config = tuning.configure(config)
        print(tuning.summary(), file=sys.stderr)
    if config.resize == "letterbox":
        print(f"resize: letterbox to {image_size[0]} x {image_size[1]} (aspect ratio kept, padded at the bottom and "
              "right; --resize stretch to stretch)", file=sys.stderr)
    classes = _class_names(args)
    source = _read_dataset(args, split=args.split, classes=classes, task=task, image_size=image_size)
    validation = None
    if args.val_split:
        validation = _read_dataset(args, split=args.val_split, classes=source.class_names, task=task,
                                   image_size=image_size)
        if not source.split_lists:
            # A folder without split lists: train on what the held-out 'val' leaves, never on both.
            from training import split_validation

            source = split_validation(source, config.validation_fraction, args.seed)[0]
    overrides = dict(args.set or [])
    rpn = task == "detection" and has_rpn(args.model)
    if task == "detection":
        overrides, notes = detector_overrides(args.model, image_size, overrides, scales=args.proposal_scales,
                                              aspect_ratios=args.proposal_ratios)
        for note in notes:
            print(note, file=sys.stderr)
    task_options = None
    metadata = {"recipe": settings}
    if task == "detection":
        task_options = _detection_options(args, image_size, training=True, rpn=rpn,
                                          rois_per_image=settings["rois_per_image"])
        if not rpn:  # what evaluate, predict and export read back (zoo.runs)
            metadata["proposals"] = _run_proposals(args, image_size, None)
    try:
        result = train(
            _builder(args.model, image_size, overrides, task), source, validation, out_dir=args.out,
            task=task, config=config, resume=args.resume, verbose=2 if args.quiet else 1, task_options=task_options,
            metadata=metadata, weights=tuning,
        )
    except TrainingDiverged as error:
        print(f"zoo train: error: {error}", file=sys.stderr)
        return 3
    best = "" if result.best_epoch is None else f"; best {result.monitor} {result.best_value:.4f} at epoch {result.best_epoch + 1}"
    print(f"zoo train: model saved to {Path(args.out) / 'model.keras'}{best}", file=sys.stderr)
    return 0


def _load_trained(name, weights, image_size, classes, task="classification"):
    """A `.keras` file from `zoo train`, or the registered model with a weights file / tag."""
    import zoo

    if str(weights).endswith(".keras"):
        return load_keras_file(weights)
    count = "classes" if task == "classification" else "num_classes"
    return zoo.build(name, weights=weights, **{count: len(classes)}, input_shape=(*image_size, 3))


def _model_image_size(args, model, run):
    """The size a verb runs a trained model at: its fixed input size, else the run's, else
    `--image-size`; a flag that contradicts the model is an error naming both sizes."""
    from zoo.predict import model_image_size
    from zoo.runs import settle

    given = tuple(args.image_size) if args.image_size else None
    fixed = model_image_size(model)
    if fixed:
        return settle("--image-size", given, tuple(fixed), source=f"the input layer of {args.weights}")
    return settle("--image-size", given, run and run.image_size, source=run and run.source)


def _run_resize(args, run, description):
    """How a verb resizes images for a trained model: the run's, else the model family's
    (`zoo describe`); a `--resize` that contradicts the run is an error naming both."""
    from zoo.runs import settle

    return settle("--resize", args.resize, run and run.resize, source=run and run.source) or description.resize


def cmd_evaluate(args) -> int:
    import zoo
    from training import evaluate
    from zoo.detection.sizing import has_rpn

    description = zoo.describe(args.model)
    task = description.task
    run = _trained_run(args)
    classes = _class_names(args, run)
    model = None
    if str(args.weights).endswith(".keras"):
        model = load_keras_file(args.weights)
        image_size = _model_image_size(args, model, run)
        if image_size is None:
            raise ValueError(f"--image-size is needed: {args.weights} takes any size and has no run.json beside it")
    else:  # a manifest tag or weights file: the registered model, built for the data's classes
        image_size = tuple(args.image_size) if args.image_size else _train_image_size(args, description)
    source = _read_dataset(args, split=args.split, classes=classes, task=task, image_size=image_size)
    if not source.split_lists:  # a LabelImg folder: say which images the split is
        print(f"evaluate: {source.summary()}", file=sys.stderr)
    if model is None:
        model = _load_trained(args.model, args.weights, image_size, source.class_names, task)
    task_options = None
    if task == "detection":
        task_options = _detection_options(args, image_size, training=False, rpn=has_rpn(args.model), run=run)
    if task == "segmentation":
        task_options = {"eval_scales": tuple(args.eval_scales), "add_flipped_images": args.add_flipped_images}
    metrics = evaluate(
        model, source, task=task, batch_size=args.batch_size or 16, image_size=image_size,
        verbose=0 if args.quiet else 1, task_options=task_options, resize=_run_resize(args, run, description),
    )
    print(json.dumps({name: round(value, 6) for name, value in metrics.items()}, allow_nan=True))
    return 0


def cmd_predict(args) -> int:
    import zoo
    from layers.detection_contract import takes_rois
    from zoo.predict import predict_files

    _refuse_file_as_out(args.out, "the pictures and predictions.json")
    description = zoo.describe(args.model)
    task = description.task
    run = _trained_run(args)
    classes = _class_names(args, run)
    if str(args.weights).endswith(".keras"):
        model = _load_trained(args.model, args.weights, None, classes, task)
    else:
        if classes is None:
            raise ValueError("--classes is needed with a weights file or tag (there is no run.json beside it)")
        size = tuple(args.image_size) if args.image_size else (None, None)
        model = _load_trained(args.model, args.weights, size, classes, task)
    image_size = _model_image_size(args, model, run)
    proposals = None
    if takes_rois(model):
        if image_size is None:
            raise ValueError("--image-size is needed: the sliding-window proposals are sized from it")
        proposals = _detection_options(args, image_size, training=False, run=run)["proposals"]
    records = predict_files(
        model, args.images, args.out, task=task, class_names=classes, image_size=image_size, proposals=proposals,
        score_threshold=args.score_threshold, top_k=args.top_k, resize=_run_resize(args, run, description),
    )
    for record in records:
        if task == "segmentation":
            found = ", ".join(f"{c.get('label', c['class'])} {c['fraction']:.0%}" for c in record["classes"])
            what = "pixels"
        elif task == "detection":
            found, what = len(record["detections"]), "detections"
        else:
            found, what = record["top_k"][0].get("label", record["top_k"][0]["class"]), "top-1"
        print(f"{record['image']}: {what} {found} -> {record['picture']}", file=sys.stderr)
    print(f"zoo predict: {len(records)} images, results in {Path(args.out) / 'predictions.json'}", file=sys.stderr)
    return 0


def _add_proposal_arguments(parser):
    detection = parser.add_argument_group(
        "detection (sliding-window proposals, or a Faster R-CNN's anchors to train; defaults from the image size)"
    )
    detection.add_argument("--proposal-stride", type=int, default=None, metavar="PIXELS",
                           help="pixels between window centres (default: shorter side / 16)")
    detection.add_argument("--proposal-scales", type=float, nargs="+", default=None, metavar="PIXELS",
                           help="window (or anchor) sides (default: 1/8, 1/4, 1/2, 3/4 of the shorter side)")
    detection.add_argument("--proposal-ratios", type=float, nargs="+", default=None, metavar="H/W",
                           help="window (or anchor) aspect ratios, height / width (default: 0.5 1 2)")


def cmd_export(args) -> int:
    import zoo

    if args.format == "saved_model":
        _refuse_file_as_out(args.out, "the SavedModel")
    overrides = dict(args.set or [])
    if args.weights and str(args.weights).endswith(".keras"):
        if overrides:
            raise ValueError("--set does not apply to a .keras model, which carries its own config")
        model = load_keras_file(args.weights)
    else:
        if args.weights is None:
            print("zoo export: no --weights: exporting randomly initialised weights", file=sys.stderr)
        model = zoo.build(args.model, weights=args.weights, **overrides)
    run = _trained_run(args)
    proposal_options = None
    if args.proposals:
        if run is not None and run.proposals:
            # The windows the model trained with, so that the SavedModel detects as `zoo predict` does.
            from zoo.predict import model_image_size

            options = _run_proposals(args, model_image_size(model) or run.image_size, run)
            print(f"zoo export: proposals as in training ({run.source}): sliding windows every {options['stride']} "
                  f"px, sides {options['scales']}, aspect ratios {options['aspect_ratios']}", file=sys.stderr)
        else:
            options = {"stride": args.proposal_stride, "scales": args.proposal_scales,
                       "aspect_ratios": args.proposal_ratios}
        proposal_options = {key: value for key, value in {**options, "max_proposals": args.max_proposals}.items()
                            if value is not None}
    class_names = _class_names(args, run)
    if class_names is None:
        print("zoo export: no class names (--classes or a run.json beside --weights): the export has no label map",
              file=sys.stderr)
    options = dict(
        overwrite=args.overwrite, batch_size=args.batch_size,
        image_size=tuple(args.image_size) if args.image_size else None, resize=run and run.resize,
        class_names=class_names, jit_compile=args.jit_compile,
        compute_dtype=args.compute_dtype, fold_batch_norm=args.fold_batch_norm,
        proposals=args.proposals, proposal_options=proposal_options,
    )
    if args.format == "saved_model":
        directory = zoo.export(model, args.out, **options)
    else:  # zoo.export_formats: the options given, so that one the format lacks is an error
        from zoo.export_formats import export_as

        options = {key: value for key, value in options.items() if value not in (None, False)}
        if args.format == "tflite":
            options.pop("class_names", None)  # a .tflite file has no label map
        directory = export_as(model, args.out, format=args.format, **options)
    written = {"saved_model": "SavedModel", "onnx": "ONNX file", "tflite": "TFLite file"}[args.format]
    print(f"zoo export: {written} written to {directory}", file=sys.stderr)
    return 0


def _add_data_arguments(parser, *, split):
    parser.add_argument("model", help="a registered model name (zoo list)")
    parser.add_argument(
        "--dataset", required=True,
        help="synthetic | synthetic:N | voc:PATH | coco:PATH.json | folder:PATH",
    )
    parser.add_argument("--images", metavar="DIR",
                        help="coco: the folder the JSON's file_names are in (default: the JSON's folder)")
    parser.add_argument("--split", default=split, help=f"the split to read (default {split})")
    parser.add_argument("--classes", help="comma-separated class names (default: from the data)")
    parser.add_argument("--image-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="train: default the model's own (zoo describe MODEL); evaluate: the trained model's")
    parser.add_argument("--resize", choices=("stretch", "letterbox"), default=None,
                        help="how images become the image size: letterbox keeps the aspect ratio and pads the "
                             "bottom and right, stretch does not (train: default the model's, zoo describe MODEL; "
                             "evaluate: the trained run's)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="train: the recipe's (zoo describe MODEL); evaluate: 16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar (train: one line per epoch)")
    _add_proposal_arguments(parser)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="A Keras 3 model zoo for vision.")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="registered models with task and parameters")
    listing.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'resnet*'")
    listing.add_argument("--task", choices=("classification", "detection", "segmentation"))
    listing.add_argument("--no-params", action="store_true", help="leave out the parameters column")
    listing.add_argument("--markdown", action="store_true", help="every model as the README's markdown table")
    listing.set_defaults(run=cmd_list)

    describe = commands.add_parser(
        "describe", help="inputs, outputs, feature maps, parameters, weights (built anew only with --set)",
    )
    describe.add_argument("name")
    describe.add_argument(
        "--set", action="append", type=_parse_override, metavar="KEY=VALUE",
        help="a config override, repeatable: --set output_stride=16 --set include_top=False",
    )
    describe.set_defaults(run=cmd_describe)

    training = commands.add_parser("train", help="train a model; leaves OUT/model.keras")
    _add_data_arguments(training, split="train")
    training.add_argument("--val-split", help="a validation split of the dataset (default: hold out 20%%)")
    training.add_argument("--epochs", type=int, default=10)
    recipe = "default: the model's recipe, see zoo describe MODEL"
    training.add_argument("--lr", type=float, default=None, help=f"base learning rate ({recipe})")
    training.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=None, help=recipe)
    training.add_argument("--schedule", choices=("constant", "step", "poly", "cosine"), default=None, help=recipe)
    training.add_argument("--warmup-epochs", type=float, default=None, help=recipe)
    training.add_argument("--weight-decay", type=float, default=None, help=recipe)
    training.add_argument("--batch-norm", choices=("fine_tune", "frozen"), default=None, help=recipe)
    training.add_argument("--precise-bn", type=int, default=16, metavar="N",
                          help="re-estimate batch-norm statistics from N training batches before validation "
                               "and at the end (0: off, keep the moving averages)")
    training.add_argument("--freeze-stages", type=int, default=None,
                          help="backbone stages from the stem not trained (default 0; with --weights of an ImageNet "
                               "classifier, the paper's: 2 for the detectors)")
    training.add_argument("--no-augment", action="store_true")
    training.add_argument("--no-flip", action="store_true",
                          help="no horizontal flips in the augmentation (digits, text: a mirror changes them)")
    training.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE")
    training.add_argument("--mixed-precision", choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"),
                          default="auto",
                          help="auto: mixed_bfloat16 where the CPU has AMX (amx_bf16), float32 elsewhere; "
                               "float32 turns it off")
    training.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto",
                          help="XLA for the training step (auto: Keras's choice, on where a GPU is)")
    training.add_argument("--strategy", choices=("default", "mirrored", "multi_worker"), default="default")
    training.add_argument("--adversarial-epsilon", type=float, default=0.0, help="FGSM step in pixels")
    training.add_argument("--out", required=True, help="the run's directory")
    training.add_argument("--resume", action="store_true", help="continue from OUT/backup")
    training.add_argument("--weights", metavar="TAG|PATH",
                          help="start from pretrained weights: a manifest tag (the backbone's for a detector: "
                               "imagenet), a keras.applications .h5 (by layer name), .weights.h5, .keras, or a "
                               "TF-slim checkpoint archive (DeepLab); see zoo.finetune")
    training.add_argument("--weights-report", action="store_true",
                          help="with --weights: name every layer loaded, missing and unused (default: counts)")
    training.add_argument("--set", action="append", type=_parse_override, metavar="KEY=VALUE")
    training.add_argument("--rois-per-image", type=int, default=None,
                          help=f"detection: RoIs sampled per image ({recipe})")
    training.set_defaults(run=cmd_train)

    evaluation = commands.add_parser("evaluate", help="metrics of a trained model, ending with one JSON line")
    _add_data_arguments(evaluation, split="val")
    evaluation.add_argument("--weights", required=True, help="OUT/model.keras, a weights file or a tag")
    evaluation.add_argument("--eval-scales", type=float, nargs="+", default=(1.0,), metavar="SCALE",
                            help="segmentation: average the softmax over these input scales (DeepLab: 0.5 ... 1.75)")
    evaluation.add_argument("--add-flipped-images", action="store_true",
                            help="segmentation: also average over the horizontally flipped images")
    evaluation.set_defaults(run=cmd_evaluate)

    prediction = commands.add_parser(
        "predict", help="run a model on image files; writes OUT/<image>.png and OUT/predictions.json",
    )
    prediction.add_argument("model", help="a registered model name (zoo list)")
    prediction.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    prediction.add_argument("--weights", required=True, help="OUT/model.keras of zoo train, a weights file or a tag")
    prediction.add_argument("--out", required=True, help="the directory for the pictures and predictions.json")
    prediction.add_argument("--classes", help="comma-separated class names (default: run.json beside --weights)")
    prediction.add_argument("--image-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                            help="the size the model runs at (default: its fixed input size, else run.json's)")
    prediction.add_argument("--resize", choices=("stretch", "letterbox"), default=None,
                            help="stretch or letterbox (default: the trained run's, run.json, else the model's)")
    prediction.add_argument("--score-threshold", type=float, default=0.3, help="detection: the lowest score kept")
    prediction.add_argument("--top-k", type=int, default=5, help="classification: classes listed per image")
    _add_proposal_arguments(prediction)
    prediction.set_defaults(run=cmd_predict)

    inspect = commands.add_parser("inspect", help="feature maps of named layers as a PNG, receptive fields")
    inspect.add_argument("model", help="a registered model name, or a .keras file")
    inspect.add_argument("image", help="an image file (read with OpenCV, fed as RGB pixels)")
    inspect.add_argument("--layers", nargs="+", metavar="LAYER", help="layers whose activations to draw")
    inspect.add_argument("--out", help="the PNG to write the feature maps to")
    inspect.add_argument("--max-channels", type=int, default=16, help="channels drawn per layer (default 16)")
    inspect.add_argument("--receptive-field", nargs="+", metavar="LAYER", help="print these layers' receptive fields")
    inspect.add_argument("--weights", help="a weights tag or file for a registered model (default: random)")
    inspect.add_argument("--set", action="append", type=_parse_override, metavar="KEY=VALUE")
    inspect.set_defaults(run=cmd_inspect)
    exporting = commands.add_parser("export", help="a SavedModel whose serving_default takes uint8 images")
    exporting.add_argument("model", help="a registered model name (zoo list)")
    exporting.add_argument("--weights", help="a manifest tag, a weights file, or OUT/model.keras from zoo train")
    exporting.add_argument("--out", required=True, help="the SavedModel directory, or the .onnx / .tflite file")
    exporting.add_argument("--format", choices=("saved_model", "onnx", "tflite"), default="saved_model",
                           help="saved_model (default), onnx (uint8 any size, as the SavedModel) or tflite "
                                "(float32 at the model's size, batch 1): see the README, Export and serving")
    exporting.add_argument("--set", action="append", type=_parse_override, metavar="KEY=VALUE",
                           help="a config override, repeatable (not with a .keras model)")
    exporting.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    exporting.add_argument("--batch-size", type=int, default=None, help="fixed batch (default: dynamic)")
    exporting.add_argument("--image-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                           help="the size the model runs at inside the graph (default: its input size; inputs "
                                "of any size are resized to it)")
    exporting.add_argument("--classes", help="comma-separated class names for the label map (default: run.json's)")
    exporting.add_argument("--jit-compile", action="store_true", help="XLA for the whole model, NMS included")
    exporting.add_argument("--compute-dtype", choices=("float16", "bfloat16"), help="mixed-precision compute")
    exporting.add_argument("--fold-batch-norm", action="store_true", help="fold batch norm into the convolutions")
    exporting.add_argument("--proposals", choices=("sliding_windows",),
                           help="Fast R-CNN: compute proposals in the graph instead of taking rois")
    exporting.add_argument("--proposal-stride", type=int, default=None, metavar="PIXELS")
    exporting.add_argument("--proposal-scales", type=float, nargs="+", default=None, metavar="PIXELS")
    exporting.add_argument("--proposal-ratios", type=float, nargs="+", default=None, metavar="H/W")
    exporting.add_argument("--max-proposals", type=int, default=None, metavar="N")
    exporting.set_defaults(run=cmd_export)

    demo = commands.add_parser(
        "demo", help="train a small detector and segmenter on synthetic data, export and reload them",
    )
    demo.add_argument("--out", default="demo_out", help="where pictures, SavedModels and summary.json go")
    demo.add_argument("--quick", action="store_true", help="toy sizes, about two minutes (metrics mean nothing)")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError) as error:  # OSError: FileExistsError, WeightsDownloadError, ...
        print(f"zoo {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
