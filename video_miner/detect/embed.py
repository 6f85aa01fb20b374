"""Embeddings from the detection pass: the detector's own backbone features, pooled over the picture
and inside each box, so dedup and selection can compare what frames show without a second model.

The feature maps are the backbone's last one, the tensor the neck first upsamples (YOLOv8's SPPF
output, 256 channels at stride 32 for the n model), and the finer one the neck joins it with
(128 channels at stride 16). It is found by pattern, not by name: in an ONNX
graph, the data input of the first ``Resize`` node; in a PyTorch model, the input of the first
``nn.Upsample``. ONNX models get it as an extra graph output (the session answers only the outputs
Ultralytics asks for, and keeps the extra one aside); PyTorch models through a forward hook.

Pooling maps each box from the original picture through Ultralytics' letterbox (scaled to fit,
centred) onto the feature grid and averages the cells it covers (at least one); the whole-picture
vector averages the cells of the picture itself, not the letterbox's padding, so a letterboxed copy
of a frame pools over the same content. Which layers and which comparison: measured on copies of
the shared videos' frames against frames with different people (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..records import FrameEmbedding


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return (v / norm if norm > 0 else v).astype(np.float32)


def _ranked(v: np.ndarray) -> np.ndarray:
    """The vector's channels replaced by their ranks, centred and normalised (Spearman's correlation
    is then a dot product). Raw activations share a large positive offset that made any two frames
    look alike (different people in one room: cosine 0.95+); ranks keep only which channels fire
    more than which, and that tells people apart while surviving mirroring, crops, re-encoding."""
    ranks = np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(np.float32)
    return _unit(ranks - ranks.mean())


#: Horizontal bands a box is pooled in (head/torso/legs for a person): the layout of colours and
#: textures inside it, which a mirror leaves as it is.
BANDS = 3


def pool(maps: list[np.ndarray], input_hw: tuple[int, int], image_wh: tuple[int, int],
         boxes_xywhn: list[tuple[float, float, float, float]]) -> FrameEmbedding:
    """Pool one image's feature maps ``(C, H, W)``, deepest first: the picture over the deepest map
    (what the scene is), each box over the next finer one in ``BANDS`` horizontal bands (what the
    object looks like, top to bottom). ``xywhn`` are of the original picture; ``input_hw`` is the
    network input it was letterboxed to."""
    ih, iw = input_hw
    w0, h0 = image_wh
    r = min(ih / h0, iw / w0)
    pad_x, pad_y = (iw - w0 * r) / 2, (ih - h0 * r) / 2

    def cells(features: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Mean feature over the cells under a rectangle of the original picture (pixels)."""
        _, fh, fw = features.shape
        sx, sy = fw / iw, fh / ih
        gx0, gx1 = (pad_x + x0 * r) * sx, (pad_x + x1 * r) * sx
        gy0, gy1 = (pad_y + y0 * r) * sy, (pad_y + y1 * r) * sy
        a, b = min(fw - 1, max(0, int(np.floor(gx0)))), min(fw, max(1, int(np.ceil(gx1))))
        t, u = min(fh - 1, max(0, int(np.floor(gy0)))), min(fh, max(1, int(np.ceil(gy1))))
        return features[:, t:max(u, t + 1), a:max(b, a + 1)].mean(axis=(1, 2))

    whole = _ranked(cells(maps[0], 0, 0, w0, h0))
    fine = maps[min(1, len(maps) - 1)]
    boxes = []
    for x, y, w, h in boxes_xywhn:
        left, right, top = (x - w / 2) * w0, (x + w / 2) * w0, (y - h / 2) * h0
        bands = [_ranked(cells(fine, left, top + h * h0 * k / BANDS, right, top + h * h0 * (k + 1) / BANDS))
                 for k in range(BANDS)]
        boxes.append(_unit(np.concatenate(bands)))
    dim = fine.shape[0] * BANDS
    return FrameEmbedding(whole, np.stack(boxes) if boxes else np.zeros((0, dim), np.float32))


# ---- where the features come from --------------------------------------------------------------
#: Feature maps used: the deepest (what the scene is) and the next finer one (colours and textures
#: that tell one person from another). The finest (stride 8) moved no measured figure and costs a
#: 1.6 MB copy per image.
MAPS = 2


def feature_outputs(graph: Any) -> list[str]:
    """The tensors an ONNX detector's neck takes from its backbone, deepest first: the data input of
    the first ``Resize`` node (the deepest map), then the finer backbone map that ``Resize``'s output
    is concatenated with (YOLOv8: SPPF at stride 32, then stride 16)."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    resizes = [n for n in graph.node if n.op_type == "Resize" and n.input and n.input[0]]
    if not resizes:
        raise ValueError("no Resize node in the graph: not a YOLO-style detector with an upsampling neck")
    names = [str(resizes[0].input[0])]
    for resize in resizes:
        for node in consumers.get(resize.output[0], []):
            if node.op_type == "Concat":
                names += [str(i) for i in node.input if i != resize.output[0] and i not in names]
    return names[:MAPS]


def with_feature_outputs(model_path: str) -> tuple[bytes, list[str]]:
    """The ONNX model with the backbone's feature maps as more graph outputs, and their names."""
    import onnx

    model = onnx.load(model_path)
    names = feature_outputs(model.graph)
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString(), names


#: One image's feature maps (C, H, W), deepest first, and the network input's (height, width).
Features = tuple[list[np.ndarray], tuple[int, int]]


class _Tap:
    """Feature maps taken during inference: (each map of a batch, the network input's height and width)."""

    def __init__(self) -> None:
        self.taken: list[tuple[list[np.ndarray], tuple[int, int]]] = []

    def drain(self, n: int) -> list[Features]:
        """The first ``n`` images' feature maps since the last drain (static-batch padding dropped)."""
        out = [([m[i] for m in maps], hw) for maps, hw in self.taken for i in range(maps[0].shape[0])][:n]
        self.taken.clear()
        return out


class FeatureTap(_Tap):
    """An ONNX Runtime session that also fetches the feature output on every run, keeping it in
    ``taken`` (with the input's height and width) and answering only the outputs asked for. One per
    inference lane: a lane runs one batch at a time."""

    def __init__(self, session: Any, features: list[str]) -> None:
        super().__init__()
        self._session = session
        self._features = features

    def run(self, output_names: list[str] | None, feed: dict[str, Any], *args: Any, **kwargs: Any) -> list[Any]:
        names = list(output_names) if output_names else [o.name for o in self.get_outputs()]
        outputs = self._session.run([*names, *self._features], feed, *args, **kwargs)
        batch = next(iter(feed.values()))
        self.taken.append(([np.asarray(m, dtype=np.float32) for m in outputs[len(names):]],
                           tuple(batch.shape[-2:])))
        return list(outputs[:len(names)])

    def get_outputs(self) -> list[Any]:
        return [o for o in self._session.get_outputs() if o.name not in self._features]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class TorchTap(_Tap):
    """The same for a PyTorch model, through its own hooks: the network's input (its size), the
    first ``nn.Upsample``'s input (the deepest map) and the finer map the concatenation after it
    joins its output with."""

    def __init__(self, network: Any) -> None:
        import torch

        super().__init__()
        self._input_hw = (0, 0)
        self._maps: list[np.ndarray] = []
        modules = list(network.modules())
        upsamples = [m for m in modules if isinstance(m, torch.nn.Upsample)]
        if not upsamples:
            raise ValueError("no nn.Upsample in the model: not a YOLO-style detector with an upsampling neck")
        concats = [modules[modules.index(u) + 1] for u in upsamples if modules.index(u) + 1 < len(modules)]
        concats = concats[:MAPS - 1]
        wanted = 1 + len(concats)

        def array(t: Any) -> np.ndarray:
            return np.asarray(t.detach().float().cpu().numpy())

        def on_input(_: Any, args: tuple[Any, ...]) -> None:
            self._input_hw = tuple(args[0].shape[-2:])  # type: ignore[assignment]
            self._maps = []

        def on_deepest(_: Any, args: tuple[Any, ...], __: Any) -> None:
            if not self._maps:
                self._maps.append(array(args[0]))

        def on_concat(_: Any, args: tuple[Any, ...], __: Any) -> None:
            # Ultralytics' Concat takes a list: [upsampled, finer backbone map]
            parts = args[0] if isinstance(args[0], list | tuple) else args
            self._maps.append(array(parts[-1]))
            if len(self._maps) == wanted:
                self.taken.append((self._maps, self._input_hw))

        network.register_forward_pre_hook(on_input)
        upsamples[0].register_forward_hook(on_deepest)
        for concat in concats:
            concat.register_forward_hook(on_concat)
