"""Loading and saving models: external data aware, atomic (never a half-written output)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError, EncodeError
from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

PROTOBUF_LIMIT = 2**31 - 1
# Above this the output is written with its tensors in a side file (the protobuf limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


class ModelError(ValueError):
    """A model file that cannot be used; the message is meant for the user as it is."""


def load_model(path, load_external: bool = True) -> onnx.ModelProto:
    """Parse a model file. External data references are always checked (the file exists, inside the
    model's folder); with `load_external=False` the tensors stay references, read later on demand
    (`numpy_helper.to_array(tensor, base_dir)`), so a model larger than memory can be streamed."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, not an ONNX model file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: the file is empty")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise ModelError(f"{path}: not a valid ONNX model (protobuf parse failed: {exc})") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ModelError(f"{path}: not a valid ONNX model (it has no graph)")
    try:
        materialize_external(model, path.parent, check_only=not load_external)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load its external data: {exc}") from None
    return model


def materialize_external(model: onnx.ModelProto, base: Path, skip: set[str] = frozenset(),
                         check_only: bool = False) -> None:
    """Check every external data reference and read the data into the model (except tensors named in
    `skip`, and all of them with `check_only`)."""
    base = Path(base)
    base_real = base.resolve()
    for tensor in _all_tensors(model):
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if base_real not in target.parents:
            raise ValueError(f"tensor {tensor.name!r} points outside the model's folder ({location!r})")
        if not target.is_file():
            raise ValueError(f"tensor {tensor.name!r}: external data file {location!r} is missing")
        if check_only or tensor.name in skip:
            continue
        load_external_data_for_tensor(tensor, str(base))
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


def _all_tensors(model: onnx.ModelProto):
    """Every TensorProto of the model that may hold external data, as onnx's own loader walks them: the
    initializers of the main graph and its subgraphs, then the tensor attributes (Constant values) of every
    node, functions' included."""
    def subgraphs(node):
        for attr in node.attribute:
            if attr.HasField("g"):
                yield attr.g
            yield from attr.graphs

    def initializers(graph):
        yield from graph.initializer
        for node in graph.node:
            for sub in subgraphs(node):
                yield from initializers(sub)

    def attribute_tensors(graph):
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
            for sub in subgraphs(node):
                yield from attribute_tensors(sub)

    yield from initializers(model.graph)
    yield from attribute_tensors(model.graph)
    for function in model.functions:
        yield from attribute_tensors(function)


def files_of(path) -> list[Path]:
    """The model file and the external data files it references."""
    path = Path(path)
    files = [path]
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return files
    seen = set()
    for tensor in _all_tensors(model):
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            if location and location not in seen:
                seen.add(location)
                files.append(path.parent / location)
    return files


def model_bytes_on_disk(path) -> int:
    """Bytes of the .onnx file plus its external data files: the measure of compression."""
    return sum(f.stat().st_size for f in files_of(path) if f.exists())


def check_output_path(input_path, output_path) -> Path:
    """Refuse to overwrite the input, or to write where it is impossible, before any work is done."""
    output = Path(output_path)
    if output.exists() and Path(input_path).exists() and output.resolve() == Path(input_path).resolve():
        raise ModelError(f"{output}: the output must not be the input file")
    if output.is_dir():
        raise ModelError(f"{output}: is a directory; give a file name for the output")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise ModelError(f"{parent}: output directory does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ModelError(f"{parent}: output directory is not writable")
    return output


def _default_permissions(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def proto_size(model: onnx.ModelProto) -> int:
    """The model's serialised size; past protobuf's 2 GiB limit, a number above the limit (protobuf
    cannot even count such a message)."""
    try:
        return model.ByteSize()
    except EncodeError:
        return PROTOBUF_LIMIT + 1


def save_model_atomic(model: onnx.ModelProto, output_path) -> None:
    """Write to a temporary folder beside the output, then rename into place: a failure leaves nothing.
    Models too large for one protobuf get their tensors in a side file `<output>.data`."""
    output = Path(output_path)
    external = proto_size(model) > EXTERNAL_DATA_THRESHOLD
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent if str(output.parent) else "."))
    try:
        tmp_model = tmp / output.name
        data_name = output.name + ".data"
        if external:
            onnx.save_model(model, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
            _default_permissions(tmp / data_name)  # onnx creates it private; the output is an ordinary file
            os.replace(tmp / data_name, output.parent / data_name)
        else:
            onnx.save_model(model, str(tmp_model))
        os.replace(tmp_model, output)
    except OSError as exc:
        raise ModelError(f"{output}: cannot write ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
