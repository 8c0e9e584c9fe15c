"""A compressed on-disk format for ONNX models that exploits low bits and zeros.

An int8 (or pruned) model is mostly weight bytes, many of them zero after pruning. The
packed file (`NAME.onnx.pack`) is the ONNX file cut at its weight tensors:

- the bytes between weights (graph, metadata, small constants) as they are;
- per weight tensor, whichever is smaller: its raw bytes, or a bitmask of its non-zero
  elements (1 bit each) plus the non-zero values packed together; float32 values that half
  precision holds exactly (the block scales of models/blockwise.py) in two bytes each;

all of it compressed with LZMA (xz, in the standard library). The tokenizer (`bpe.model`,
which spells the biasing context) is packed too, as one LZMA stream: its float scores and
pieces shrink to about a third. Unpacking concatenates the
pieces back into the exact bytes of the original file, with numpy alone (no `onnx` package
on the device), so the model card's sha256 of `NAME.onnx` checks the decoded model, and
the unpacked file is what sherpa-onnx loads.

    python -m edge_asr.models.packed pack models/rnnt-v1-int8      # NAME -> NAME.pack
    python -m edge_asr.models.packed unpack models/rnnt-v1-int8    # and back
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from edge_asr.models.blockwise import block_codes, scale_names

MAGIC = b"EAPK1\n"
SUFFIX = ".pack"
_DENSE, _SPARSE, _HALF = 0, 1, 2  # _HALF: float32 values that float16 holds exactly
_MIN_WEIGHT_BYTES = 64  # smaller tensors stay in the gaps: not worth a header
_LZMA = {"format": lzma.FORMAT_XZ, "preset": 9 | lzma.PRESET_EXTREME}
_HEADER = "<BQQ8s"  # mode, element count, payload bytes, numpy dtype string
# Packed besides the ONNX files; tokens.txt stays plain (2.6 KB, and people read it).
OTHER_PACKED = ("bpe.model",)


def _encode(values: np.ndarray) -> bytes:
    raw = values.tobytes()
    dtype = values.dtype.str.encode().ljust(8)
    if values.dtype == np.float32:
        half = values.astype(np.float16)
        # Only where it is exact (bit for bit), e.g. the block scales models/blockwise.py
        # rounds to half precision: the decoded file must hash as the card says.
        if np.array_equal(half.astype(np.float32).view(np.uint32), values.view(np.uint32)):
            payload = half.tobytes()
            return struct.pack(_HEADER, _HALF, values.size, len(payload), dtype) + payload
    # Zero by bit pattern: -0.0 (a pruned negative weight times a 0 mask) is kept as a value,
    # so that it decodes to the same bytes.
    nonzero = values.reshape(-1).view(f"u{values.dtype.itemsize}") != 0
    sparse_size = (values.size + 7) // 8 + int(nonzero.sum()) * values.dtype.itemsize
    if sparse_size < len(raw):  # worth it from about 1/8 zeros for int8
        payload = np.packbits(nonzero).tobytes() + values.reshape(-1)[nonzero].tobytes()
        return struct.pack(_HEADER, _SPARSE, values.size, len(payload), dtype) + payload
    return struct.pack(_HEADER, _DENSE, values.size, len(raw), dtype) + raw


def _decode(buf: io.BytesIO) -> bytes:
    mode, count, size, dtype = struct.unpack(_HEADER, buf.read(struct.calcsize(_HEADER)))
    payload = buf.read(size)
    if mode == _DENSE:
        return payload
    if mode == _HALF:
        return np.frombuffer(payload, np.float16).astype(np.float32).tobytes()
    dt = np.dtype(dtype.decode().strip())
    mask_bytes = (count + 7) // 8
    nonzero = np.unpackbits(np.frombuffer(payload[:mask_bytes], np.uint8), count=count)
    values = np.zeros(count, dt)
    values[nonzero.astype(bool)] = np.frombuffer(payload[mask_bytes:], dt)
    return values.tobytes()


def pack_bytes(onnx_bytes: bytes) -> bytes:
    import onnx  # the recipe's dependency; unpacking on the device never needs it
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    pieces, pos = [], 0
    for t in model.graph.initializer:
        if not t.HasField("raw_data") or len(t.raw_data) < _MIN_WEIGHT_BYTES:
            continue
        at = onnx_bytes.find(t.raw_data, pos)  # initializers are serialised in order
        if at < 0:
            raise ValueError(f"weight {t.name!r} not found in the serialised model")
        if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            values = np.frombuffer(t.raw_data, np.uint8)  # two codes a byte, as stored
        else:
            values = numpy_helper.to_array(t).reshape(-1)
        pieces.append((onnx_bytes[pos:at], _encode(values)))
        pos = at + len(t.raw_data)
    body = io.BytesIO()
    body.write(struct.pack("<I", len(pieces)))
    for gap, blob in pieces:
        body.write(struct.pack("<Q", len(gap)) + gap + blob)
    body.write(onnx_bytes[pos:])
    return _compress(body.getvalue(), onnx_bytes)


def pack_plain_bytes(data: bytes) -> bytes:
    """Any other file in the same container: no weight pieces, the bytes LZMA-compressed."""
    return _compress(struct.pack("<I", 0) + data, data)


def _compress(body: bytes, original: bytes) -> bytes:
    packed = MAGIC + lzma.compress(body, **_LZMA)
    if unpack_bytes(packed) != original:
        raise ValueError("packing does not round-trip this file exactly")
    return packed


def unpack_bytes(packed: bytes) -> bytes:
    """The original ONNX file's bytes from a packed file; ValueError if it is damaged."""
    if not packed.startswith(MAGIC):
        raise ValueError("not an edge-asr packed model (bad magic)")
    try:
        buf = io.BytesIO(lzma.decompress(packed[len(MAGIC):]))
        (count,) = struct.unpack("<I", buf.read(4))
        out = []
        for _ in range(count):
            (gap,) = struct.unpack("<Q", buf.read(8))
            out.append(buf.read(gap))
            out.append(_decode(buf))
        out.append(buf.read())
    except (lzma.LZMAError, struct.error, ValueError, TypeError) as e:
        raise ValueError(f"packed model is corrupt: {e}") from e
    return b"".join(out)


def sparsity(onnx_path: Path) -> tuple[int, int]:
    """(zero weights, all weights) over the model's weight matrices (2-D and up)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    zeros = total = 0
    block = block_codes(model)  # 4-bit codes two to a byte: count codes, not bytes
    for codes, zero, _ in block.values():
        zeros, total = zeros + int((codes == zero).sum()), total + codes.size
    skip = set(block) | scale_names(model)
    for t in model.graph.initializer:
        if len(t.dims) >= 2 and t.name not in skip:
            values = numpy_helper.to_array(t)
            zeros += int((values == 0).sum())
            total += values.size
    return zeros, total


def weight_bits(onnx_paths: Sequence[Path]) -> float:
    """Bits a weight code needs, averaged over the quantised weight matrices of these files
    and weighted by their size: log2 of the distinct values in each int8 one (8 after
    post-training quantisation; 4 after 4-bit QAT, whose 15 levels are stored as int8 codes;
    the small convolutions, which QAT leaves on another axis than onnxruntime's, count as
    8), and the operators' own width for block-quantized codes (models/blockwise.py). 32
    when none is quantised."""
    import onnx
    from onnx import numpy_helper

    bits = count = 0
    for path in onnx_paths:
        model = onnx.load(str(path))
        for codes, _, code_bits in block_codes(model).values():
            bits, count = bits + code_bits * codes.size, count + codes.size
        for t in model.graph.initializer:
            if len(t.dims) >= 2 and t.data_type == onnx.TensorProto.INT8:
                values = numpy_helper.to_array(t)
                levels = np.unique(values).size
                bits += values.size * (int(np.ceil(np.log2(levels))) if levels > 1 else 1)
                count += values.size
    return round(bits / count, 2) if count else 32.0


def pack_dir(model_dir: Path, keep_plain: bool = False) -> dict[str, int]:
    """Pack every NAME.onnx of a model folder and its bpe.model; returns bytes on disk per
    packed file."""
    sizes = {}
    paths = sorted(model_dir.glob("*.onnx")) + [p for n in OTHER_PACKED
                                                if (p := model_dir / n).is_file()]
    for path in paths:
        data = path.read_bytes()
        packed = pack_bytes(data) if path.suffix == ".onnx" else pack_plain_bytes(data)
        out = path.with_name(path.name + SUFFIX)
        out.write_bytes(packed)
        sizes[out.name] = len(packed)
        if not keep_plain:
            path.unlink()
    return sizes


def unpack_dir(model_dir: Path) -> None:
    for path in sorted(model_dir.glob("*" + SUFFIX)):
        path.with_name(path.name[: -len(SUFFIX)]).write_bytes(unpack_bytes(path.read_bytes()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["pack", "unpack"])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--keep-plain", action="store_true",
                   help="pack: keep the unpacked files too")
    args = p.parse_args()
    if args.action == "pack":
        for name, size in pack_dir(args.model_dir, args.keep_plain).items():
            print(f"{name}: {size:,} bytes")
    else:
        unpack_dir(args.model_dir)
    refresh_card_bytes(args.model_dir)


def bytes_on_disk(model_dir: Path, names: Iterable[str]) -> dict[str, int]:
    """Bytes of each named file as the folder holds it: plain (NAME), packed (NAME.pack),
    or both after an unpack."""
    on_disk = {}
    for name in names:
        for candidate in (model_dir / name, model_dir / (name + SUFFIX)):
            if candidate.is_file():
                on_disk[candidate.name] = candidate.stat().st_size
    return on_disk


def refresh_card_bytes(model_dir: Path) -> None:
    """Keep the card's bytes on disk true after packing or unpacking (its sha256 are of the
    plain files, so they hold either way)."""
    card_path = model_dir / "model_card.json"
    if not card_path.is_file():
        return
    card = json.loads(card_path.read_text())
    on_disk = bytes_on_disk(model_dir, card["sha256"])
    card["bytes"], card["bytes_total"] = on_disk, sum(on_disk.values())
    card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
