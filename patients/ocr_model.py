"""The OCR models' graphs made cheaper before they are loaded: exact algebra, the same outputs.

rapidocr's PP-OCRv4 detector and recogniser are Paddle exports in which every activation is spelled out
op by op: after each convolution a learnable affine (`x·s + b`), a hard-swish as four ops
(`y·clip(y + 3, 0, 6) / 6`), then another affine. onnxruntime runs each op as a pass over the whole
tensor, and those passes were a third of recognition's time (its profiler: Mul, Add, Div, Clip beside the
convolutions). Four rewrites, each exact up to float rounding:

- a convolution followed by `· s + b` (scalars) takes them into its weights and bias;
- the hard-swish becomes `y · HardSigmoid(y; 1/6, 1/2)`, two passes instead of four;
- `· s + b` (scalars) feeding only 1x1 convolutions without padding goes into those convolutions
  (`W·s`, `B + b·ΣW`); with padding the border would change, so those stay;
- every `· s + b` (scalars) left on a 4-D tensor of known channels becomes a 1x1 depthwise convolution
  (weight s, bias b per channel). The arithmetic is the same, but onnxruntime keeps convolutions in its
  blocked NCHWc layout and not a Mul or an Add of a scalar: each of those affines was a pass out of that
  layout, the Mul, the Add and a pass back in (a fifth of recognition's time in its profiler; 8-10 % of
  the recogniser's and the detector's CPU, measured on the PP-OCRv4 models).

The rewritten graph is checked against the original in tests/test_ocr_model.py (the same characters on
real strips, logits within 1e-4). A graph without these patterns (another model) comes back unchanged.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def simplified(path: Path | str) -> bytes:
    """The model at `path`, rewritten as above, serialised for `onnxruntime.InferenceSession`."""
    import onnx

    model = onnx.load(str(path))
    _Rewriter(model).run()
    return model.SerializeToString()


class _Rewriter:
    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.model = model
        graph = self.graph = model.graph
        self.values: dict[str, np.ndarray] = {
            node.output[0]: numpy_helper.to_array(node.attribute[0].t)
            for node in graph.node
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"
        }
        self.values.update({init.name: numpy_helper.to_array(init) for init in graph.initializer})
        self.added = 0

    def run(self) -> None:
        self._fold_affine_into_conv()
        self._hard_swish()
        self._fold_affine_into_next_conv()
        self._affine_as_depthwise_conv()
        self._prune()

    # -- helpers --------------------------------------------------------------------------------------------

    def _consumers(self) -> dict[str, list[Any]]:
        consumers: dict[str, list[Any]] = defaultdict(list)
        for node in self.graph.node:
            for name in node.input:
                consumers[name].append(node)
        return consumers

    def _scalar(self, name: str) -> float | None:
        value = self.values.get(name)
        return None if value is None or value.size != 1 else float(value.reshape(-1)[0])

    def _affine(self, mul: Any, consumers: dict[str, list[Any]]) -> tuple[str, float, float, Any] | None:
        """`mul` as the start of `x · s + b` with scalar s and b: (x, s, b, the Add), else None."""
        if mul.op_type != "Mul" or len(mul.input) != 2:
            return None
        scalars = [self._scalar(name) for name in mul.input]
        if sum(s is not None for s in scalars) != 1:
            return None
        s = next(v for v in scalars if v is not None)
        x = next(name for name, v in zip(mul.input, scalars, strict=True) if v is None)
        after = consumers.get(mul.output[0], [])
        if len(after) != 1 or after[0].op_type != "Add" or len(after[0].input) != 2:
            return None
        add = after[0]
        other = [name for name in add.input if name != mul.output[0]]
        b = self._scalar(other[0]) if len(other) == 1 else None
        return None if b is None else (x, s, b, add)

    def _conv_weights(self, conv: Any) -> tuple[np.ndarray, np.ndarray] | None:
        weight = self.values.get(conv.input[1])
        if weight is None:
            return None
        bias = (
            self.values.get(conv.input[2]) if len(conv.input) > 2 else np.zeros(weight.shape[0], np.float32)
        )
        return None if bias is None else (weight, bias)

    def _set_conv(self, conv: Any, x: str, weight: np.ndarray, bias: np.ndarray, output: str | None) -> None:
        from onnx import numpy_helper

        names = (f"qeeg_folded_{self.added}_w", f"qeeg_folded_{self.added}_b")
        self.added += 1
        for name, array in zip(names, (weight, bias), strict=True):
            self.graph.initializer.append(numpy_helper.from_array(array.astype(np.float32), name))
            self.values[name] = array
        del conv.input[:]
        conv.input.extend([x, *names])
        if output is not None:
            del conv.output[:]
            conv.output.append(output)

    def _replace_nodes(self, removed: set[int], inserted: dict[int, list[Any]] | None = None) -> None:
        inserted = inserted or {}
        nodes = []
        for node in self.graph.node:
            nodes.extend(inserted.get(id(node), []))
            if id(node) not in removed:
                nodes.append(node)
        del self.graph.node[:]
        self.graph.node.extend(nodes)

    # -- rewrites -------------------------------------------------------------------------------------------

    def _fold_affine_into_conv(self) -> None:
        consumers = self._consumers()
        removed: set[int] = set()
        for conv in [node for node in self.graph.node if node.op_type == "Conv"]:
            after = consumers.get(conv.output[0], [])
            affine = self._affine(after[0], consumers) if len(after) == 1 else None
            weights = self._conv_weights(conv)
            if affine is None or weights is None:
                continue
            _, s, b, add = affine
            weight, bias = weights
            self._set_conv(conv, conv.input[0], weight * s, bias * s + b, output=add.output[0])
            removed |= {id(after[0]), id(add)}
        self._replace_nodes(removed)

    def _hard_swish(self) -> None:
        from onnx import helper

        consumers = self._consumers()
        producer = {output: node for node in self.graph.node for output in node.output}
        removed: set[int] = set()
        inserted: dict[int, list[Any]] = {}
        for clip in [node for node in self.graph.node if node.op_type == "Clip" and len(node.input) == 3]:
            plus = producer.get(clip.input[0])
            if plus is None or plus.op_type != "Add" or len(plus.input) != 2:
                continue
            rest = [name for name in plus.input if self._scalar(name) != 3.0]
            if len(rest) != 1 or (self._scalar(clip.input[1]), self._scalar(clip.input[2])) != (0.0, 6.0):
                continue
            y = rest[0]
            if len(consumers.get(plus.output[0], [])) != 1 or len(consumers.get(clip.output[0], [])) != 1:
                continue
            times = consumers[clip.output[0]][0]
            if times.op_type != "Mul" or y not in times.input or len(consumers.get(times.output[0], [])) != 1:
                continue
            divide = consumers[times.output[0]][0]
            if (
                divide.op_type != "Div"
                or divide.input[0] != times.output[0]
                or self._scalar(divide.input[1]) != 6
            ):
                continue
            gate = clip.output[0] + "_qeeg_gate"
            inserted[id(divide)] = [
                helper.make_node("HardSigmoid", [y], [gate], alpha=1 / 6, beta=0.5),
                helper.make_node("Mul", [y, gate], [divide.output[0]]),
            ]
            removed |= {id(plus), id(clip), id(times), id(divide)}
        self._replace_nodes(removed, inserted)

    def _fold_affine_into_next_conv(self) -> None:
        consumers = self._consumers()
        removed: set[int] = set()
        for mul in [node for node in self.graph.node if node.op_type == "Mul"]:
            affine = self._affine(mul, consumers)
            if affine is None:
                continue
            x, s, b, add = affine
            convs = consumers.get(add.output[0], [])
            if not convs or add.output[0] in {output.name for output in self.graph.output}:
                continue
            if not all(self._pointwise(conv, add.output[0]) for conv in convs):
                continue
            for conv in convs:
                weight, bias = self._conv_weights(conv)  # type: ignore[misc]
                self._set_conv(conv, x, weight * s, bias + b * weight.sum(axis=(1, 2, 3)), output=None)
            removed |= {id(mul), id(add)}
        self._replace_nodes(removed)

    def _affine_as_depthwise_conv(self) -> None:
        from onnx import helper, numpy_helper, shape_inference

        inferred = shape_inference.infer_shapes(self.model).graph
        channels = {}
        for value in [*inferred.value_info, *inferred.input]:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[1].HasField("dim_value"):
                channels[value.name] = dims[1].dim_value
        consumers = self._consumers()
        removed: set[int] = set()
        inserted: dict[int, list[Any]] = {}
        for mul in list(self.graph.node):
            affine = self._affine(mul, consumers)
            if affine is None or affine[0] not in channels:
                continue
            x, s, b, add = affine
            count = channels[x]
            names = (f"qeeg_affine_{self.added}_w", f"qeeg_affine_{self.added}_b")
            self.added += 1
            arrays = (np.full((count, 1, 1, 1), s, np.float32), np.full(count, b, np.float32))
            for name, array in zip(names, arrays, strict=True):
                self.graph.initializer.append(numpy_helper.from_array(array, name))
                self.values[name] = array
            inserted[id(add)] = [
                helper.make_node("Conv", [x, *names], [add.output[0]], group=count, kernel_shape=[1, 1])
            ]
            removed |= {id(mul), id(add)}
        self._replace_nodes(removed, inserted)

    def _pointwise(self, conv: Any, source: str) -> bool:
        """`conv` is a 1x1 convolution of `source` without padding or groups (so an affine of its input
        can go into its weights exactly)."""
        from onnx import helper

        if conv.op_type != "Conv" or conv.input[0] != source:
            return False
        attributes = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        weights = self._conv_weights(conv)
        return (
            weights is not None
            and weights[0].shape[2:] == (1, 1)
            and not any(attributes.get("pads", [0]))
            and attributes.get("group", 1) == 1
        )

    def _prune(self) -> None:
        """Constants and initializers nothing reads any more (onnxruntime would warn about each)."""
        used = {name for node in self.graph.node for name in node.input}
        used |= {output.name for output in self.graph.output}
        kept = [n for n in self.graph.node if not (n.op_type == "Constant" and n.output[0] not in used)]
        self._replace_nodes({id(n) for n in self.graph.node} - {id(n) for n in kept})
        initializers = [init for init in self.graph.initializer if init.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(initializers)


# Bump when a rewrite changes: cached graphs of another version are not used.
REWRITE_VERSION = 2


def load_simplified(engine: Any, *, threads: int = 1, cache: Path | None = None) -> None:
    """Swap the detector's and recogniser's onnxruntime sessions of a rapidocr `engine` for sessions of
    their simplified graphs, with every optimisation and `threads` threads. `cache` (a folder) keeps the
    rewritten graphs, keyed by the original's sha256 and REWRITE_VERSION: importing onnx and rewriting cost
    ~0.8 s of CPU, loading a cached graph ~0.03 s.

    The detector keeps onnxruntime's memory arena (rapidocr turns it off for both): a page's feature maps
    are tens of MB each, over glibc's mmap threshold, so without the arena every layer of every page maps
    fresh memory and faults it in (~34,000 page faults a page). Its CPU per A4 page went 0.34 → 0.24 s
    (user and system). The arena keeps the detector's largest maps while the page is recognised, so a whole
    read peaks ~70-130 MB higher (642-675 MB an ingestion in the benchmark, under its 1 GB target). The
    recogniser's tensors are small enough for malloc to reuse (no faults), so it stays without one."""
    import onnxruntime
    from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH
    from rapidocr_onnxruntime.utils import read_yaml, update_model_path

    config = update_model_path(read_yaml(DEFAULT_CFG_PATH))
    for holder, part in ((engine.text_det.infer, "Det"), (engine.text_rec.session, "Rec")):
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = part == "Det"
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        graph = _cached(Path(config[part]["model_path"]), cache)
        holder.session = onnxruntime.InferenceSession(
            graph, sess_options=options, providers=["CPUExecutionProvider"]
        )


def _cached(original: Path, cache: Path | None) -> bytes:
    if cache is None:
        return simplified(original)
    from documents.files import write_atomic

    digest = hashlib.sha256(original.read_bytes()).hexdigest()[:24]
    path = cache / f"{original.stem}.{digest}.v{REWRITE_VERSION}.onnx"
    if path.exists():
        return path.read_bytes()
    graph = simplified(original)
    write_atomic(path, graph)
    return graph
