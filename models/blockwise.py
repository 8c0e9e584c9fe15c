"""4-bit (or 8-bit) weights with one scale per block of inputs, as onnxruntime runs them
natively.

Per-channel 4-bit (one scale per output row of 256-2048 weights, what `--qat-bits 4`
trains) lets the few largest weights of a row set the step for all of them. A scale per
block of 64 inputs follows the weights far more closely, so post-training rounding to 4
bits loses little. onnxruntime has kernels for it: `MatMulNBits` (the encoder's LSTM and
projection matrices, the decoder's projection, the joiner) and `GatherBlockQuantized` (the
decoder's embedding), contrib operators of the standard CPU build, which hold the weights
as packed 4-bit codes in memory too and multiply with int8 arithmetic
(`accuracy_level` 4); sherpa-onnx, built on onnxruntime, loads the files unchanged.

    python -m edge_asr.models.quantize models/rnnt-v1 OUT --block-4bit 64 --data D

Symmetric: code 8 is zero, so a weight pruned to zero stays exactly zero, and there are no
zero points to store. The scales are rounded to half precision (a relative change of at
most 2^-11 against a 4-bit step of about 1/8 of the block's range) so that the packed file
stores them in two bytes, not four (`models/packed.py`). The subsampling convolutions stay
float: onnxruntime has no block-quantized convolution, and they are 1% of the weights.

8 bits (`--block-8bit N`, code 128 is zero) are the fast int8 model here: one fused
`MatMulNBits` per matrix, where onnxruntime's dynamic quantisation runs four operators
(quantise the input, MatMulInteger, cast, rescale) for every one of the encoder's many small
per-frame products (bench/rtf.py measures both). onnxruntime's quantizer does not take the
embedding at 8 bits, so `embedding_to_block8` writes its `GatherBlockQuantized` itself, on
the same grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Operators whose weight input holds the codes (4-bit ones two to a byte), and where their
# scales are.
BLOCK_OPS = {"MatMulNBits": (1, 2), "GatherBlockQuantized": (0, 2)}  # (codes, scales) inputs
BITS = (4, 8)


def code_range(bits: int) -> tuple[int, int]:
    """Symmetric codes: a block's largest-magnitude weight is the lowest code exactly
    (scale = that weight / low), as onnxruntime's quantizer makes it."""
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def valid_block(inputs: int) -> bool:
    """Whether onnxruntime's MatMulNBits takes blocks of this many inputs: a power of two
    from 16 (the quantizer's and the kernels' condition; quantize and the recipe check it)."""
    return inputs >= 16 and not inputs & (inputs - 1)


def attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def gemm_to_matmul(model) -> int:
    """Rewrite each Gemm with a constant weight (the joiner's output layer) as MatMul + Add,
    which the block quantizer handles (it skips Gemm). Returns how many were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        attrs = attributes(node)
        plain = (attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
                 and not attrs.get("transA", 0))
        if node.op_type != "Gemm" or node.input[1] not in inits or not plain:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        name = node.input[1] + "_kn"  # (in, out), as MatMul wants it
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), name))
        product = node.output[0] + "_matmul" if len(node.input) > 2 else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product],
                                      name=node.name + "_matmul"))
        if len(node.input) > 2:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                                          name=node.name + "_bias"))
        rewritten += 1
    _replace_nodes(graph, nodes)
    return rewritten


def _replace_nodes(graph, nodes: list) -> None:
    """Give the graph these nodes and drop the initializers no node reads any more."""
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def scales_to_half(model) -> None:
    """Round the block scales to values that half precision holds exactly."""
    from onnx import numpy_helper

    scales = scale_names(model)
    for i, t in enumerate(model.graph.initializer):
        if t.name in scales:
            half = numpy_helper.to_array(t).astype(np.float16).astype(np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(half, t.name))


def quantize_file(src: Path, out: Path, block_size: int, bits: int = 4) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    if bits not in BITS:
        raise ValueError(f"block-wise weights are 4- or 8-bit, not {bits}-bit")
    model = onnx.load(str(src))
    gemm_to_matmul(model)
    ops = ("MatMul", "Gather") if bits == 4 else ("MatMul",)  # its Gather is 4-bit only
    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=True, accuracy_level=4, bits=bits,
        op_types_to_quantize=ops, quant_axes=(("MatMul", 0), ("Gather", 1)))
    quantizer = MatMulNBitsQuantizer(model, algo_config=config)
    quantizer.process()
    quantized = quantizer.model.model
    if bits == 8:
        embedding_to_block8(quantized, block_size)
    scales_to_half(quantized)
    onnx.save(quantized, str(out))


def embedding_to_block8(model, block_size: int) -> int:
    """Replace each Gather from a constant 2-D float table (the decoder's embedding) by an
    8-bit GatherBlockQuantized: uint8 codes, code 128 is zero, one scale per `block_size`
    entries of a row. Returns how many were replaced."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    low, high = code_range(8)
    nodes, replaced = [], 0
    for node in graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        if (table is None or len(table.dims) != 2 or table.data_type != TensorProto.FLOAT
                or attributes(node).get("axis", 0) != 0):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(table)
        rows, cols = weight.shape
        blocks = np.pad(weight, ((0, 0), (0, (-cols) % block_size))).reshape(rows, -1, block_size)
        peak = np.take_along_axis(blocks, np.abs(blocks).argmax(-1)[..., None], -1)
        scale = np.where(peak == 0, 1.0, peak / low).astype(np.float32)
        codes = np.clip(np.round(blocks / scale), low, high).astype(np.int32) - low
        codes = codes.reshape(rows, -1)[:, :cols].astype(np.uint8)
        graph.initializer.extend([numpy_helper.from_array(codes, table.name + "_q8"),
                                  numpy_helper.from_array(scale[..., 0], table.name + "_scale")])
        nodes.append(helper.make_node(
            "GatherBlockQuantized", [table.name + "_q8", node.input[1], table.name + "_scale"],
            list(node.output), name=node.name + "_q8", domain="com.microsoft",
            gather_axis=0, quantize_axis=1, block_size=block_size, bits=8))
        replaced += 1
    _replace_nodes(graph, nodes)
    if replaced and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return replaced


def block_codes(model) -> dict[str, tuple[np.ndarray, int, int]]:
    """{weight name: (its codes, one per weight; the code of zero; bits)} for every
    block-quantized weight of a loaded ONNX model: what `packed.sparsity` and
    `packed.weight_bits` count for these operators (4-bit bytes hold two codes each, and a
    row is padded to whole blocks)."""
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    codes = {}
    for node in model.graph.node:
        if node.op_type not in BLOCK_OPS:
            continue
        attrs = attributes(node)
        bits = attrs.get("bits", 4)
        if bits not in BITS:
            raise ValueError(f"{node.name}: {bits}-bit codes; only 4- and 8-bit ones are read")
        name = node.input[BLOCK_OPS[node.op_type][0]]
        tensor = inits[name]
        if tensor.data_type == TensorProto.INT4:  # the embedding: signed codes, 0 is zero
            codes[name] = (numpy_helper.to_array(tensor).reshape(-1), 0, 4)
            continue
        raw = numpy_helper.to_array(tensor).view(np.uint8)
        if bits == 4:
            raw = np.stack([raw & 0x0F, raw >> 4], axis=-1)
        rows = raw.reshape(raw.shape[0], -1)
        if node.op_type == "MatMulNBits":  # (N, blocks, bytes): K codes a row, then padding
            rows = rows[:, : attrs["K"]]
        codes[name] = (rows.reshape(-1), -code_range(bits)[0], bits)  # unsigned: 8 or 128 is 0
    return codes


def scale_names(model) -> set[str]:
    """The block scales' initializers (float, not weights)."""
    return {n.input[BLOCK_OPS[n.op_type][1]] for n in model.graph.node if n.op_type in BLOCK_OPS}
