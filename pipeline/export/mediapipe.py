"""The MediaPipe ``face_stylizer.task`` bundle: TFLite metadata, face models, the zip itself.

MediaPipe's Tasks ``FaceStylizer`` (Python API of mediapipe 0.9.3 to 0.10.21; removed from the
source in 2025) runs a bundle of three TFLite models: a face detector, a face landmarks detector
and the stylizer, 1 x R x R x 3 image in, 1 x R x R x 3 image out. The bundle is an uncompressed
zip whose entries start on 4-byte boundaries (the Tasks runtime reads the models in place).

The stylizer must carry TFLite metadata (``metadata_schema.fbs``, file identifier ``M001``, stored
in a model buffer named ``TFLITE_METADATA``): the Tasks graph takes the input normalization from
it and refuses a float32 input without one. It derives the input range from the normalization
applied to 0..255 pixels, ``[(0 - mean) / std, (255 - mean) / std]``, and always reads the output
as floats in [0, 1]; Model Maker's face stylizer writes mean 0, std 255, i.e. input in [0, 1],
which is our models' contract. :func:`with_stylizer_metadata` writes exactly what MediaPipe's
``metadata_writers.face_stylizer.MetadataWriter`` writes (same tables, same fields, same build
order, so the same bytes with the same flatbuffers release), from our own builder code, so the
main environment needs no mediapipe (mediapipe 0.10.21 needs numpy < 2).

The face models come from an official ``face_landmarker.task``. For offline tests the mediapipe
wheel ships the same short-range detector and a 468-landmark mesh model; the Tasks graph decodes
478 landmarks, so :func:`pad_landmarks_to_478` appends 10 zero landmarks (the iris points, which
the alignment does not use). That padded model is a test stand-in, not a product.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from flatbuffers import number_types
from flatbuffers.table import Table

from pipeline.errors import DataError, FileError
from pipeline.io import atomic_path, describe_os_error, sha256_bytes

# What MediaPipe's face stylizer metadata writer writes (metadata_writers/face_stylizer.py,
# metadata_writer.py, metadata_info.py of mediapipe 0.10.21).
STYLIZER_NAME = "FaceStylizer"
STYLIZER_DESCRIPTION = "Performs face stylization on images."
INPUT_NAME = "image"
INPUT_DESCRIPTION = "Input image to be processed."
NORM_MEAN, NORM_STD = 0.0, 255.0   # 0..255 pixels -> [0, 1] (Model Maker's _NORM_MEAN/_NORM_STD)
METADATA_BUFFER_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
TFLITE_IDENTIFIER = b"TFL3"
# The metadata parser version MediaPipe's populator computes (metadata_version.cc): 1.0.0 unless
# a member added later is present (process units on the subgraph, tensor groups, tokenizers,
# audio, custom metadata); the stylizer's metadata has none of them.
MIN_PARSER_VERSION = "1.0.0"

FACE_DETECTOR = "face_detector.tflite"
FACE_LANDMARKS_DETECTOR = "face_landmarks_detector.tflite"
FACE_STYLIZER = "face_stylizer.tflite"
BUNDLE_NAMES = (FACE_DETECTOR, FACE_LANDMARKS_DETECTOR, FACE_STYLIZER)  # MediaPipe's order
ALIGNMENT = 4

# Test stand-ins inside the mediapipe wheel (its ``mediapipe/modules`` folder).
WHEEL_DETECTOR = "face_detection/face_detection_short_range.tflite"
WHEEL_LANDMARKS = "face_landmark/face_landmark.tflite"
MESH_LANDMARKS, TASKS_LANDMARKS = 468, 478   # x, y, z per landmark

# Schema enums and union tags used here (metadata_schema.fbs, TFLite schema.fbs).
_IMAGE_PROPERTIES = 2      # ContentProperties.ImageProperties
_NORMALIZATION = 1         # ProcessUnitOptions.NormalizationOptions
_RGB = 1                   # ColorSpaceType.RGB
_COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}
_CONTENT_TYPES = {1: "FeatureProperties", 2: "ImageProperties", 3: "BoundingBoxProperties",
                  4: "AudioProperties"}
_FLOAT32, _UINT8 = 0, 3    # TensorType
_CONCATENATION = 2         # BuiltinOperator


@dataclasses.dataclass(frozen=True)
class FaceModels:
    """The two face models of a bundle and where they came from (written into reports)."""

    face_detector: bytes
    face_landmarks_detector: bytes
    source: str


# --- TFLite model flatbuffer -------------------------------------------------------------------

def _require_tflite(model: bytes, what: str) -> None:
    if len(model) < 8 or model[4:8] != TFLITE_IDENTIFIER:
        raise DataError(f"{what}: not a TFLite model (no 'TFL3' flatbuffer identifier)")


def _read_model(model: bytes, what: str):  # -> ai_edge_litert.schema_py_generated.ModelT
    from ai_edge_litert.tools import flatbuffer_utils

    _require_tflite(model, what)
    try:
        return flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    except Exception as e:  # noqa: BLE001 - a corrupt flatbuffer fails anywhere in the parser
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataError(f"{what}: corrupt TFLite model ({type(e).__name__}: {reason})") from None


def _write_model(model) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _name(raw: bytes | str | None) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else (raw or "")


# --- metadata: writing ------------------------------------------------------------------------

def _float_vector(builder: flatbuffers.Builder, values: list[float]) -> int:
    return builder.CreateNumpyVector(np.asarray(values, dtype=np.float32))


def _table(builder: flatbuffers.Builder, fields: int, slots: list[tuple[str, int, Any]]) -> int:
    """A table of ``fields`` slots; ``slots`` lists (kind, slot, value) in MediaPipe's order of
    adding them ("offset": a child written before, "uint8": a scalar with default 0)."""
    builder.StartObject(fields)
    for kind, slot, value in slots:
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        else:
            builder.PrependUint8Slot(slot, value, 0)
    return builder.EndObject()


def _offsets(builder: flatbuffers.Builder, items: list[int]) -> int:
    builder.StartVector(4, len(items), 4)
    for item in reversed(items):
        builder.PrependUOffsetTRelative(item)
    return builder.EndVector()


def _image_input_metadata(builder: flatbuffers.Builder, input_type: int) -> int:
    """TensorMetadata of the image input: name, description, RGB ImageProperties, a
    NormalizationOptions process unit, and the stats MediaPipe derives from the input type."""
    name, description = builder.CreateString(INPUT_NAME), builder.CreateString(INPUT_DESCRIPTION)
    image = _table(builder, 2, [("uint8", 0, _RGB)])                      # ImageProperties
    content = _table(builder, 3, [("uint8", 0, _IMAGE_PROPERTIES), ("offset", 1, image)])
    mean, std = _float_vector(builder, [NORM_MEAN]), _float_vector(builder, [NORM_STD])
    normalization = _table(builder, 2, [("offset", 0, mean), ("offset", 1, std)])
    unit = _table(builder, 2, [("uint8", 0, _NORMALIZATION), ("offset", 1, normalization)])
    units = _offsets(builder, [unit])
    if input_type == _UINT8:
        low, high = [0.0], [255.0]
    else:  # float32: the range the normalization maps 0..255 pixels to
        low, high = [(0.0 - NORM_MEAN) / NORM_STD], [(255.0 - NORM_MEAN) / NORM_STD]
    stats = _table(builder, 2, [("offset", 0, _float_vector(builder, high)),
                                ("offset", 1, _float_vector(builder, low))])
    return _table(builder, 7, [("offset", 0, name), ("offset", 1, description),
                               ("offset", 3, content), ("offset", 4, units),
                               ("offset", 5, stats)])


def stylizer_metadata(output_name: str, *, input_type: int = _FLOAT32,
                      name: str = STYLIZER_NAME, description: str = STYLIZER_DESCRIPTION,
                      version: str | None = None, author: str | None = None,
                      license: str | None = None) -> bytes:
    """The ``ModelMetadata`` flatbuffer (identifier ``M001``) of a face stylizer.

    Args:
        output_name:  the model's output tensor name; the output's tensor metadata holds only
                      that name, as MediaPipe's writer does.
        input_type:   the input's TFLite TensorType (0 float32, 3 uint8): sets the stats.
        name, description, version, author, license: ModelMetadata's general fields (MediaPipe
                      writes name and description only; None leaves a field out).
    """
    b = flatbuffers.Builder(0)
    strings = {field: b.CreateString(value) if value is not None else None
               for field, value in (("name", name), ("description", description),
                                    ("version", version))}
    inputs = _offsets(b, [_image_input_metadata(b, input_type)])
    outputs = _offsets(b, [_table(b, 7, [("offset", 0, b.CreateString(output_name))])])
    subgraph = _table(b, 10, [("offset", 2, inputs), ("offset", 3, outputs)])
    subgraphs = _offsets(b, [subgraph])
    tail = {field: b.CreateString(value) if value is not None else None
            for field, value in (("author", author), ("license", license))}
    parser_version = b.CreateString(MIN_PARSER_VERSION)
    slots = [("offset", slot, offset) for slot, offset in
             ((0, strings["name"]), (1, strings["description"]), (2, strings["version"]),
              (3, subgraphs), (4, tail["author"]), (5, tail["license"]), (7, parser_version))
             if offset is not None]
    b.Finish(_table(b, 8, slots), METADATA_IDENTIFIER)
    return bytes(b.Output())


def _check_stylizer_interface(model, what: str) -> None:
    """The Tasks graph's demands on a stylizer: one subgraph (the GPU delegate refuses more),
    one 1 x H x W x 3 uint8/float32 input, an output of 1 x H' x W' x 3. One output only: the
    graph reads just the first, and MediaPipe's writer gives every output the first one's name
    (it fills one shared TensorMetadataT), which a second output would expose."""
    if len(model.subgraphs or []) != 1:
        raise DataError(f"{what}: {len(model.subgraphs or [])} subgraphs, a stylizer needs one")
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise DataError(f"{what}: {len(graph.inputs)} inputs and {len(graph.outputs)} outputs, "
                        f"a stylizer has one image input and one image output")
    source, target = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    if source.type not in (_FLOAT32, _UINT8):
        raise DataError(f"{what}: input type {source.type} (TFLite TensorType), MediaPipe "
                        f"takes float32 or uint8")
    for side, tensor in (("input", source), ("output", target)):
        shape = [int(d) for d in tensor.shape]
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise DataError(f"{what}: {side} shape {shape}, expected 1 x H x W x 3 (NHWC RGB)")


def with_stylizer_metadata(model: bytes, *, name: str = STYLIZER_NAME,
                           description: str = STYLIZER_DESCRIPTION, version: str | None = None,
                           author: str | None = None, license: str | None = None) -> bytes:
    """``model`` (a TFLite image-to-image stylizer) with the metadata MediaPipe's face stylizer
    MetadataWriter writes: :func:`stylizer_metadata` in a new buffer referenced by a model
    metadata entry named ``TFLITE_METADATA`` (replacing an earlier one of that name; other
    entries, such as the converter's ``min_runtime_version``, are kept).

    With the defaults (MediaPipe's name and description, no version, author or license) the
    metadata is what MediaPipe writes; the other fields are ours to fill and MediaPipe's
    MetadataDisplayer shows them. Raises :class:`DataError` for a model the Tasks graph cannot
    run as a stylizer.
    """
    from ai_edge_litert import schema_py_generated as schema

    tflite = _read_model(model, "face stylizer")
    _check_stylizer_interface(tflite, "face stylizer")
    graph = tflite.subgraphs[0]
    metadata = stylizer_metadata(_name(graph.tensors[graph.outputs[0]].name),
                                 input_type=graph.tensors[graph.inputs[0]].type, name=name,
                                 description=description, version=version, author=author,
                                 license=license)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    entries = tflite.metadata = list(tflite.metadata or [])
    existing = [m for m in entries if _name(m.name) == METADATA_BUFFER_NAME]
    if existing:
        tflite.buffers[existing[0].buffer] = buffer
    else:
        tflite.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_BUFFER_NAME, len(tflite.buffers) - 1
        entries.append(entry)
    return _write_model(tflite)


# --- metadata: reading back -------------------------------------------------------------------

def _offset(tab: Table, slot: int) -> int:
    return tab.Offset(4 + 2 * slot)


def _string(tab: Table, slot: int) -> str | None:
    o = _offset(tab, slot)
    return tab.String(o + tab.Pos).decode("utf-8") if o else None


def _child(tab: Table, slot: int) -> Table | None:
    o = _offset(tab, slot)
    return Table(tab.Bytes, tab.Indirect(o + tab.Pos)) if o else None


def _children(tab: Table, slot: int) -> list[Table] | None:
    o = _offset(tab, slot)
    if not o:
        return None
    start = tab.Vector(o)
    return [Table(tab.Bytes, tab.Indirect(start + 4 * i)) for i in range(tab.VectorLen(o))]


def _floats(tab: Table, slot: int) -> list[float] | None:
    o = _offset(tab, slot)
    return [float(v) for v in tab.GetVectorAsNumpy(number_types.Float32Flags, o)] if o else None


def _byte(tab: Table, slot: int) -> int:
    o = _offset(tab, slot)
    return int(tab.Get(number_types.Uint8Flags, o + tab.Pos)) if o else 0


def _union(tab: Table, slot: int) -> Table | None:
    o = _offset(tab, slot)
    if not o:
        return None
    value = Table(tab.Bytes, 0)
    tab.Union(value, o)
    return value


def _present(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _tensor_metadata(tab: Table) -> dict[str, Any]:
    """One TensorMetadata as MetadataDisplayer's JSON shows it (name, description, content,
    process units, stats; the members the face stylizer writer uses)."""
    content = _child(tab, 3)
    content_json = None
    if content is not None:
        kind, value = _byte(content, 0), _union(content, 1)
        properties = {}
        if kind == _IMAGE_PROPERTIES and value is not None and _byte(value, 0):
            properties["color_space"] = _COLOR_SPACES.get(_byte(value, 0), _byte(value, 0))
        content_json = {"content_properties_type": _CONTENT_TYPES.get(kind, kind),
                        "content_properties": properties}
    units = None
    if (unit_tables := _children(tab, 4)) is not None:
        units = []
        for unit in unit_tables:
            kind, options = _byte(unit, 0), _union(unit, 1)
            if kind == _NORMALIZATION and options is not None:
                units.append({"options_type": "NormalizationOptions",
                              "options": _present(mean=_floats(options, 0),
                                                  std=_floats(options, 1))})
            else:
                units.append({"options_type": kind})
    stats = _child(tab, 5)
    return _present(name=_string(tab, 0), description=_string(tab, 1), content=content_json,
                    process_units=units,
                    stats=None if stats is None else _present(max=_floats(stats, 0),
                                                              min=_floats(stats, 1)))


def parse_metadata(metadata: bytes, what: str = "metadata") -> dict[str, Any]:
    """A ``ModelMetadata`` flatbuffer as a dict shaped like MediaPipe's ``MetadataDisplayer``
    JSON (snake_case keys, absent members left out), for the members a face stylizer's metadata
    has. Raises :class:`DataError` when it is not an ``M001`` flatbuffer."""
    if len(metadata) < 8 or metadata[4:8] != METADATA_IDENTIFIER:
        raise DataError(f"{what}: not TFLite model metadata (no 'M001' flatbuffer identifier)")
    try:
        root = Table(bytearray(metadata), struct.unpack_from("<I", metadata, 0)[0])
        subgraphs = [_present(name=_string(s, 0), description=_string(s, 1),
                              input_tensor_metadata=_map(_tensor_metadata, _children(s, 2)),
                              output_tensor_metadata=_map(_tensor_metadata, _children(s, 3)))
                     for s in _children(root, 3) or []]
        return _present(name=_string(root, 0), description=_string(root, 1),
                        version=_string(root, 2), subgraph_metadata=subgraphs or None,
                        author=_string(root, 4), license=_string(root, 5),
                        min_parser_version=_string(root, 7))
    except (IndexError, struct.error, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{what}: corrupt model metadata ({type(e).__name__}: {e})") from None


def _map(function, items):
    return None if items is None else [function(item) for item in items]


def metadata_buffer(model: bytes, what: str = "model") -> bytes | None:
    """The bytes of a TFLite model's ``TFLITE_METADATA`` buffer, None when it has none."""
    from ai_edge_litert import schema_py_generated as schema

    _require_tflite(model, what)
    try:
        root = schema.Model.GetRootAs(model, 0)
        for i in range(root.MetadataLength()):
            entry = root.Metadata(i)
            if _name(entry.Name()) != METADATA_BUFFER_NAME:
                continue
            buffer = root.Buffers(entry.Buffer())
            if buffer.Offset() > 1:  # models over 2 GB keep buffers after the flatbuffer
                return bytes(model[buffer.Offset():buffer.Offset() + buffer.Size()])
            return bytes(buffer.DataAsNumpy()) if buffer.DataLength() else b""
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise DataError(f"{what}: corrupt TFLite model ({type(e).__name__}: {e})") from None
    return None


def read_stylizer_metadata(model: bytes, what: str = "face stylizer") -> dict[str, Any]:
    """The metadata of a stylizer model (:func:`parse_metadata`), checked for what the Tasks
    graph reads from it: one subgraph, one RGB image input with one normalization (mean, std;
    std not 0), one output. Raises a one-line :class:`DataError` otherwise."""
    raw = metadata_buffer(model, what)
    if raw is None:
        raise DataError(f"{what}: no {METADATA_BUFFER_NAME} metadata (MediaPipe needs its input "
                        f"normalization)")
    metadata = parse_metadata(raw, f"{what} metadata")
    subgraphs = metadata.get("subgraph_metadata", [])
    if len(subgraphs) != 1:
        raise DataError(f"{what} metadata: {len(subgraphs)} subgraph entries, expected 1")
    inputs = subgraphs[0].get("input_tensor_metadata", [])
    outputs = subgraphs[0].get("output_tensor_metadata", [])
    if len(inputs) != 1 or len(outputs) != 1:
        raise DataError(f"{what} metadata: {len(inputs)} input and {len(outputs)} output "
                        f"entries, expected 1 and 1")
    content = inputs[0].get("content", {})
    if (content.get("content_properties_type") != "ImageProperties"
            or content.get("content_properties", {}).get("color_space") != "RGB"):
        raise DataError(f"{what} metadata: the input is not described as an RGB image "
                        f"({content or 'no content'})")
    units = [u for u in inputs[0].get("process_units", [])
             if u["options_type"] == "NormalizationOptions"]
    options = units[0]["options"] if units else {}
    mean, std = options.get("mean", []), options.get("std", [])
    if len(units) != 1 or len(set(mean)) != 1 or len(set(std)) != 1 or not std[0]:
        raise DataError(f"{what} metadata: the input needs one normalization with one mean and "
                        f"one non-zero std, got {units}")
    return metadata


# --- the landmark stand-in ---------------------------------------------------------------------

def _landmark_output(graph, what: str) -> int:
    """Position in ``graph.outputs`` of the float32 (1, 1, 1, 1404) landmark output."""
    floats = {3 * MESH_LANDMARKS: [], 3 * TASKS_LANDMARKS: []}
    for position, index in enumerate(graph.outputs):
        tensor = graph.tensors[index]
        size = int(np.prod(tensor.shape)) if tensor.shape is not None else 0
        if tensor.type == _FLOAT32 and size in floats and int(tensor.shape[-1]) == size:
            floats[size].append(position)
    if floats[3 * TASKS_LANDMARKS]:
        raise DataError(f"{what}: already has a {3 * TASKS_LANDMARKS}-float landmark output "
                        f"({TASKS_LANDMARKS} landmarks); nothing to pad")
    if len(floats[3 * MESH_LANDMARKS]) != 1:
        shapes = [list(graph.tensors[i].shape) for i in graph.outputs]
        raise DataError(f"{what}: expected one float32 output of {3 * MESH_LANDMARKS} values "
                        f"({MESH_LANDMARKS} landmarks x 3), outputs are {shapes}")
    return floats[3 * MESH_LANDMARKS][0]


def _concatenation_code(model) -> int:
    """Index of the CONCATENATION operator code in ``model``, added when missing."""
    from ai_edge_litert import schema_py_generated as schema

    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == _CONCATENATION:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = _CONCATENATION
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def pad_landmarks_to_478(model: bytes, what: str = "face landmark model") -> bytes:
    """The 468-landmark face mesh model with 10 zero landmarks appended to its landmark output.

    MediaPipe's Tasks face landmarker graph decodes 478 landmarks (the v2 model's 468 mesh
    points plus 10 iris points) from the first output; fed the wheel's 468-landmark
    ``face_landmark.tflite`` it reads past the tensor and the crops come out wrong. The padded
    model ends in ``CONCATENATION(landmarks (1, 1, 1, 1404), zeros (1, 1, 1, 30))`` -> (1, 1, 1,
    1434); the new tensor takes the old output's name (so the model's own metadata still names
    it) and its place among the outputs, whose order is kept. The stylizer's alignment uses eye
    and mouth corners only (landmarks 33, 133, 263, 362, 61, 291), never the iris.
    """
    from ai_edge_litert import schema_py_generated as schema

    tflite = _read_model(model, what)
    graph = tflite.subgraphs[0]
    position = _landmark_output(graph, what)
    old_index = graph.outputs[position]
    old = graph.tensors[old_index]
    pad = 3 * (TASKS_LANDMARKS - MESH_LANDMARKS)

    def tensor(name: str, last: int, buffer: int) -> int:
        new = schema.TensorT()
        new.shape = [*[int(d) for d in old.shape[:-1]], last]
        if old.shapeSignature is not None:
            new.shapeSignature = [*[int(d) for d in old.shapeSignature[:-1]], last]
        new.type, new.name, new.buffer = _FLOAT32, name, buffer
        graph.tensors.append(new)
        return len(graph.tensors) - 1

    zeros = schema.BufferT()
    zeros.data = np.zeros(pad, dtype="<f4").view(np.uint8)
    tflite.buffers.append(zeros)
    name = _name(old.name)
    zeros_index = tensor(f"{name}_zero_landmarks", pad, len(tflite.buffers) - 1)
    padded_index = tensor(name, 3 * TASKS_LANDMARKS, 0)
    old.name = f"{name}_{MESH_LANDMARKS}"

    concat = schema.OperatorT()
    concat.opcodeIndex = _concatenation_code(tflite)
    concat.inputs, concat.outputs = [old_index, zeros_index], [padded_index]
    concat.builtinOptionsType = schema.BuiltinOptions.ConcatenationOptions
    concat.builtinOptions = schema.ConcatenationOptionsT()
    concat.builtinOptions.axis = len(old.shape) - 1
    graph.operators.append(concat)   # after every producer of the old output
    graph.outputs[position] = padded_index
    for signature in tflite.signatureDefs or []:
        for entry in signature.outputs or []:
            if entry.tensorIndex == old_index:
                entry.tensorIndex = padded_index
    return _write_model(tflite)


# --- the face models ---------------------------------------------------------------------------

def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileError(f"{path}: {what} not found") from None
    except OSError as e:
        raise FileError(describe_os_error(e, path)) from None


def _find_member(archive: zipfile.ZipFile, name: str, where: str, depth: int = 0) -> bytes | None:
    """The entry whose base name is ``name``: at the top, in a folder, or inside a nested
    ``.task`` bundle (two levels at most). Two candidates at one level are ambiguous."""
    hits = [info for info in archive.infolist() if Path(info.filename).name == name]
    if len(hits) > 1:
        raise DataError(f"{where}: {len(hits)} entries named {name} "
                        f"({', '.join(h.filename for h in hits)}); which one is meant?")
    if hits:
        return archive.read(hits[0])
    if depth < 2:
        for info in archive.infolist():
            if info.filename.endswith(".task"):
                nested = f"{where}!{info.filename}"
                with _open_zip(archive.read(info), nested) as inner:
                    found = _find_member(inner, name, nested, depth + 1)
                if found is not None:
                    return found
    return None


def _open_zip(data: bytes, what: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise DataError(f"{what}: not a zip archive ({e})") from None


def face_models(landmarker_task: Path | None, mediapipe_modules: Path | None) -> FaceModels:
    """The face detector and landmarks detector of a stylizer bundle.

    Args:
        landmarker_task:   an official MediaPipe ``face_landmarker.task`` (a zip holding
                           ``face_detector.tflite`` and ``face_landmarks_detector.tflite``, at
                           its top, in a folder or in a nested ``.task``); used when given.
        mediapipe_modules: otherwise the mediapipe wheel's ``mediapipe/modules`` folder
                           (:func:`wheel_modules`): its short-range face detector and its
                           468-landmark mesh model padded to 478 (:func:`pad_landmarks_to_478`),
                           a test stand-in.

    Returns the models and ``source``, a line saying which of the two they are. A missing file is
    a :class:`FileError`, a corrupt or incomplete one a :class:`DataError`, naming the file.
    """
    if landmarker_task is not None:
        path = Path(landmarker_task)
        data = _read_file(path, "face landmarker task")
        models = {}
        with _open_zip(data, str(path)) as archive:
            for name in (FACE_DETECTOR, FACE_LANDMARKS_DETECTOR):
                try:
                    member = _find_member(archive, name, str(path))
                except (zipfile.BadZipFile, zlib.error, OSError) as e:  # a damaged entry
                    raise DataError(f"{path}: corrupt zip entry ({e})") from None
                if member is None:
                    raise DataError(f"{path}: no {name} inside (entries: "
                                    f"{', '.join(archive.namelist())})")
                _require_tflite(member, f"{path}!{name}")
                models[name] = member
        return FaceModels(models[FACE_DETECTOR], models[FACE_LANDMARKS_DETECTOR],
                          f"official face landmarker {sha256_bytes(data)}")
    if mediapipe_modules is None:
        raise DataError("no face models: give an official face_landmarker.task, or the mediapipe "
                        "wheel's mediapipe/modules folder for the test stand-in")
    modules = Path(mediapipe_modules)
    detector_path, landmarks_path = modules / WHEEL_DETECTOR, modules / WHEEL_LANDMARKS
    detector = _read_file(detector_path, "face detector model")
    _require_tflite(detector, str(detector_path))
    landmarks = pad_landmarks_to_478(_read_file(landmarks_path, "face landmark model"),
                                     str(landmarks_path))
    return FaceModels(detector, landmarks, f"test stand-in from the mediapipe wheel "
                                           f"({MESH_LANDMARKS} landmarks padded to "
                                           f"{TASKS_LANDMARKS})")


def wheel_modules(venv: Path) -> Path:
    """The ``mediapipe/modules`` folder of the mediapipe installed in virtualenv ``venv``
    (``lib/python3.X/site-packages/mediapipe/modules``); :class:`FileError` when absent."""
    found = sorted(Path(venv).glob("lib/python3*/site-packages/mediapipe/modules"))
    if not found:
        raise FileError(f"{venv}: no mediapipe/modules in its site-packages (is it the mediapipe "
                        f"virtualenv of scripts/mediapipe_venv.sh?)")
    return found[-1]


# --- the bundle --------------------------------------------------------------------------------

_LOCAL = struct.Struct("<IHHHHHIIIHH")          # local file header, 30 bytes
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # central directory header, 46 bytes
_END = struct.Struct("<IHHHHIIH")               # end of central directory, 22 bytes
_DOS_DATE = (0 << 9) | (1 << 5) | 1             # 1980-01-01, 00:00: the same bytes every time


def _stored_zip(entries: dict[str, bytes]) -> bytes:
    """A zip of uncompressed entries, each one's data on an ALIGNMENT-byte boundary.

    Zero bytes before a local header move its data into place, as MediaPipe's own
    ``AlignZipFile`` does (zip readers locate entries through the central directory).
    """
    out, central = bytearray(), bytearray()
    for name, data in entries.items():
        raw = name.encode("ascii")
        out += b"\0" * (-(len(out) + _LOCAL.size + len(raw)) % ALIGNMENT)
        offset, crc = len(out), zlib.crc32(data)
        if offset + len(data) >= 0xFFFFFFFF:
            raise DataError(f"{name}: {len(data)} bytes, too large for a zip without ZIP64")
        out += _LOCAL.pack(0x04034B50, 20, 0, 0, 0, _DOS_DATE, crc, len(data), len(data),
                           len(raw), 0) + raw + data
        central += _CENTRAL.pack(0x02014B50, 0x0314, 20, 0, 0, 0, _DOS_DATE, crc, len(data),
                                 len(data), len(raw), 0, 0, 0, 0, 0o644 << 16, offset) + raw
    end = _END.pack(0x06054B50, 0, 0, len(entries), len(entries), len(central), len(out), 0)
    return bytes(out + central + end)


def write_task_bundle(path: str | Path, *, face_detector: bytes, face_landmarks_detector: bytes,
                      face_stylizer: bytes) -> None:
    """Write the ``face_stylizer.task`` bundle MediaPipe's Tasks FaceStylizer runs: an
    uncompressed zip of exactly ``face_detector.tflite``, ``face_landmarks_detector.tflite`` and
    ``face_stylizer.tflite`` (in that order), each 4-byte aligned, byte-identical for the same
    models. ``face_stylizer`` must carry its metadata (:func:`with_stylizer_metadata`). The
    bundle is checked (:func:`check_task_bundle`) before it replaces ``path`` atomically."""
    models = dict(zip(BUNDLE_NAMES, (face_detector, face_landmarks_detector, face_stylizer),
                      strict=True))
    for name, model in models.items():
        _require_tflite(model, name)
    read_stylizer_metadata(face_stylizer, FACE_STYLIZER)
    bundle = _stored_zip(models)
    with atomic_path(path) as tmp:
        tmp.write_bytes(bundle)
        check_task_bundle(tmp, name=str(path))


def check_task_bundle(path: str | Path, *, name: str | None = None) -> dict[str, Any]:
    """Reopen a ``face_stylizer.task`` and check what MediaPipe relies on: a zip of exactly the
    three model names, stored uncompressed, each entry's data 4-byte aligned and a TFLite model,
    and the stylizer's metadata (:func:`read_stylizer_metadata`). Returns {"entries": {name:
    (data offset, bytes)}, "metadata": the stylizer's metadata}; a one-line :class:`DataError`
    (or :class:`FileError` for a missing file) names the bundle and the fault. ``name``: how the
    bundle is named in messages (default: ``path``)."""
    path = Path(path)
    where = name or str(path)
    data = _read_file(path, "face stylizer bundle")
    entries = {}
    with _open_zip(data, where) as archive:
        names = archive.namelist()
        if sorted(names) != sorted(BUNDLE_NAMES):
            raise DataError(f"{where}: entries {names}, expected exactly {list(BUNDLE_NAMES)}")
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise DataError(f"{where}: {info.filename} is compressed; MediaPipe reads the "
                                f"models in place and needs them stored")
            header = data[info.header_offset:info.header_offset + _LOCAL.size]
            if len(header) < _LOCAL.size or _LOCAL.unpack(header)[0] != 0x04034B50:
                raise DataError(f"{where}: {info.filename}: no local header at its offset")
            name_length, extra_length = _LOCAL.unpack(header)[9:11]
            start = info.header_offset + _LOCAL.size + name_length + extra_length
            if start % ALIGNMENT:
                raise DataError(f"{where}: {info.filename} starts at byte {start}, not "
                                f"{ALIGNMENT}-byte aligned")
            model = data[start:start + info.file_size]
            if zlib.crc32(model) != info.CRC:
                raise DataError(f"{where}: {info.filename} fails its CRC check (truncated?)")
            _require_tflite(model, f"{where}!{info.filename}")
            entries[info.filename] = (start, info.file_size)
            if info.filename == FACE_STYLIZER:
                metadata = read_stylizer_metadata(model, f"{where}!{FACE_STYLIZER}")
    return {"entries": entries, "metadata": metadata}
