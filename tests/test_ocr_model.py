"""The OCR models' simplified graphs compute what the originals compute, with fewer passes."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH
from rapidocr_onnxruntime.utils import read_yaml, update_model_path

from patients import ocr_model


def session(model: bytes | str) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def scalar(name: str, value: float) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.array([value], np.float32), name)
    )


def paddle_block(rng: np.random.Generator, *, second_kernel: int) -> onnx.ModelProto:
    """conv 3x3 → ·s+b → hard-swish as four ops → ·s+b → conv (1x1 unpadded, or 3x3 padded): the shape
    of every block of the PP-OCRv4 models."""
    w1 = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(size=8).astype(np.float32)
    pad = second_kernel // 2
    w2 = rng.normal(size=(4, 8, second_kernel, second_kernel)).astype(np.float32)
    b2 = rng.normal(size=4).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        scalar("s1", 1.7),
        helper.make_node("Mul", ["s1", "c1"], ["m1"]),
        scalar("t1", 0.3),
        helper.make_node("Add", ["m1", "t1"], ["y"]),
        scalar("three", 3.0),
        helper.make_node("Add", ["y", "three"], ["y3"]),
        scalar("zero", 0.0),
        scalar("six", 6.0),
        helper.make_node("Clip", ["y3", "zero", "six"], ["clipped"]),
        helper.make_node("Mul", ["y", "clipped"], ["gated"]),
        scalar("six_again", 6.0),
        helper.make_node("Div", ["gated", "six_again"], ["swished"]),
        scalar("s2", 0.4),
        helper.make_node("Mul", ["s2", "swished"], ["m2"]),
        scalar("t2", -0.2),
        helper.make_node("Add", ["m2", "t2"], ["a2"]),
        helper.make_node(
            "Conv", ["a2", "w2", "b2"], ["out"], kernel_shape=[second_kernel] * 2, pads=[pad] * 4
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 20])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])


def ops(model: bytes) -> collections.Counter:
    return collections.Counter(node.op_type for node in onnx.load_from_string(model).graph.node)


@pytest.mark.parametrize("second_kernel", [1, 3])
def test_a_paddle_block_computes_the_same_in_fewer_passes(tmp_path, second_kernel):
    rng = np.random.default_rng(7)
    path = tmp_path / "block.onnx"
    onnx.save(paddle_block(rng, second_kernel=second_kernel), path)
    rewritten = ocr_model.simplified(path)
    x = rng.normal(scale=3.0, size=(1, 3, 12, 20)).astype(np.float32)  # both sides of the hard-swish knees
    expected = session(str(path)).run(None, {"x": x})[0]
    got = session(rewritten).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    counted = ops(rewritten)
    assert counted["Clip"] == 0 and counted["Div"] == 0 and counted["HardSigmoid"] == 1
    graph = onnx.load_from_string(rewritten).graph
    read = {name for node in graph.node for name in node.input}
    assert all(node.output[0] in read for node in graph.node if node.op_type == "Constant")
    assert all(init.name in read for init in graph.initializer)  # nothing left unread
    # The affine after the first conv is in its weights; the one before the second conv too when that
    # conv is 1x1 without padding (a padded border would read b where the original read 0), else it is a
    # 1x1 depthwise convolution of its own (which onnxruntime runs in its blocked layout, a Mul and an Add
    # of a scalar it does not). Either way the only Mul left is the hard-swish's.
    assert (counted["Mul"], counted["Add"]) == (1, 0)
    assert counted["Conv"] == (2 if second_kernel == 1 else 3)
    if second_kernel == 3:
        [depthwise] = [node for node in graph.node if node.op_type == "Conv" and node.input[0] == "swished"]
        attributes = {a.name: helper.get_attribute_value(a) for a in depthwise.attribute}
        assert attributes == {"group": 8, "kernel_shape": [1, 1]}


@pytest.fixture(scope="module")
def models():
    config = update_model_path(read_yaml(DEFAULT_CFG_PATH))
    return {part: config[part]["model_path"] for part in ("Det", "Rec")}


def text_strip(rng: np.random.Generator, width: int) -> np.ndarray:
    """A 48-px strip of dark digit-like strokes on white, normalised as the recogniser takes it."""
    strip = np.full((48, width), 255, np.uint8)
    for x in range(6, width - 14, 16):
        strip[10:38, x : x + 3] = rng.integers(0, 90)
        strip[10:13, x : x + 10] = rng.integers(0, 90)
    return np.repeat(strip[None], 3, axis=0).astype(np.float32) / 127.5 - 1.0


def test_the_recogniser_reads_the_same_characters(models):
    rng = np.random.default_rng(3)
    batch = np.stack([text_strip(rng, 320) for _ in range(4)])
    original, rewritten = session(models["Rec"]), session(ocr_model.simplified(models["Rec"]))
    name = original.get_inputs()[0].name
    expected, got = original.run(None, {name: batch})[0], rewritten.run(None, {name: batch})[0]
    assert (got.argmax(axis=2) == expected.argmax(axis=2)).all()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert ops(ocr_model.simplified(models["Rec"]))["Clip"] == 0


@pytest.mark.parametrize("part", ["Det", "Rec"])
def test_no_scalar_affine_is_left_between_the_convolutions(models, part):
    """Each `x · s + b` of the PP-OCRv4 models is in a convolution's weights or is a depthwise convolution:
    none is left for onnxruntime to run outside its blocked layout."""
    model = onnx.load_from_string(ocr_model.simplified(models[part]))
    rewriter = ocr_model._Rewriter(model)
    consumers = rewriter._consumers()
    assert [node.name for node in model.graph.node if rewriter._affine(node, consumers)] == []
    assert ops(onnx.load(models[part]).SerializeToString())["Mul"] > ops(model.SerializeToString())["Mul"]


def test_the_detector_finds_the_same_text(models):
    rng = np.random.default_rng(5)
    page = np.stack([text_strip(rng, 640) for _ in range(4)]).reshape(1, 3, 192, 640)
    original, rewritten = session(models["Det"]), session(ocr_model.simplified(models["Det"]))
    name = original.get_inputs()[0].name
    expected, got = original.run(None, {name: page})[0], rewritten.run(None, {name: page})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_cached_graph_is_reused_and_keyed_by_the_original(tmp_path, models, monkeypatch):
    cache = tmp_path / "ocr"
    first = ocr_model._cached(ocr_model.Path(models["Rec"]), cache)
    [kept] = cache.iterdir()
    assert kept.name.startswith("ch_PP-OCRv4_rec_infer.") and kept.name.endswith(
        f".v{ocr_model.REWRITE_VERSION}.onnx"
    )

    def not_again(path):
        raise AssertionError("rewritten again instead of read from the cache")

    monkeypatch.setattr(ocr_model, "simplified", not_again)
    assert ocr_model._cached(ocr_model.Path(models["Rec"]), cache) == first
