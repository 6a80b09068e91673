"""torchvision's side of bench/detection_latency.py: `fasterrcnn_resnet50_fpn` in eval mode.

Runs in its own virtual environment (torch is never a dependency of the zoo), for example
`/work/tv-venv/bin/python bench/torchvision_detection.py --image IMAGE.npy`, and speaks
bench/_peer.py's protocol: one JSON line describing the model, then `run K` commands.

The model: `fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=K + 1)`,
random weights, eval mode, called under `torch.inference_mode()` on one `[3, H, W]` image in
[0, 1] (the caller's uint8 pixels / 255; torchvision normalises inside). Its transform is given
`min_size=H, max_size=W` (H <= W), so the image keeps its size (scale factor 1; the batch is
still padded to a multiple of 32, 600 -> 608 rows). The rest is torchvision's defaults: RPN
1000 boxes per FPN level before and after NMS at test time, NMS 0.7, box score threshold 0.05,
NMS 0.5, 100 detections per image.
"""

import argparse
import sys

import numpy as np
import torch
import torchvision

from _peer import serve


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True, help="uint8 [H, W, 3] .npy (RGB)")
    parser.add_argument("--num-classes", type=int, default=20, help="object classes; the background is added")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image = np.load(args.image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        sys.exit(f"--image must hold a uint8 [H, W, 3] array, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=args.num_classes + 1,
        min_size=min(height, width), max_size=max(height, width),
    ).eval()
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255.0

    def run_once():
        with torch.inference_mode():
            detections = model([tensor])[0]
        return detections["boxes"].shape[0]

    with torch.inference_mode():
        resized, _ = model.transform([tensor])
    serve(
        {
            "model": "torchvision fasterrcnn_resnet50_fpn (eval, random weights)",
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "threads": torch.get_num_threads(), "parameters": sum(p.numel() for p in model.parameters()),
            "input_size": [height, width], "size_after_transform": list(resized.image_sizes[0]),
            "padded_batch_shape": list(resized.tensors.shape),
            "rpn_test_pre_nms_top_n": model.rpn._pre_nms_top_n["testing"],
            "rpn_test_post_nms_top_n": model.rpn._post_nms_top_n["testing"],
            "box_detections_per_img": model.roi_heads.detections_per_img,
        },
        run_once,
    )


if __name__ == "__main__":
    main()
