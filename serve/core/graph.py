"""Check an ONNX graph before it is run: linreg serves the graphs it makes, not any graph.

A model file is code: an ONNX ``Loop`` of 2⁵⁰ iterations or an ``Expand`` to a petabyte runs
inside onnxruntime where no timeout reaches. linreg's own models use a handful of operators with
costs bounded by the input, one 2-D float input and one 2-D output with declared widths, and no
external data. :func:`check_graph` reads the protobuf bytes directly (the runtime does not need
the ``onnx`` package) and refuses anything else in one line, unless the caller opts in to a
foreign graph (then only external data, which would read other files, is still refused).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from serve.core.errors import ModelError

# Operators whose cost is bounded by the size of their inputs and of the file itself: what
# linreg's exporter writes (Gemm, MatMul, Add) plus the plain arithmetic and shape operators
# that preprocessing folded into a graph may use. No control flow, nothing that allocates a
# size read from data (Expand, Tile, ConstantOfShape, Range, Resize...).
ALLOWED_OPS = frozenset({"Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Neg", "Identity", "Cast",
                         "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat",
                         "Constant", "Where", "IsNaN", "Equal", "Sqrt", "Max",
                         "Pow", "Log", "Exp", "Abs",  # --formula's functions
                         "Less", "Greater", "GreaterOrEqual"})  # --formula's bs() intervals
# linreg-export --intervals adds these outputs beside "prediction", same type and shape.
PREDICTION = "prediction"
FEATURES = "features"  # a plain model's one input: [rows, n_features]
INTERVAL_OUTPUTS = ("prediction_lower", "prediction_upper", "mean_lower", "mean_upper")
# linreg-export --contributions adds this last output: [batch, targets x terms], same type.
CONTRIBUTIONS = "contributions"
_STANDARD_DOMAINS = ("", "ai.onnx")
_FLOAT_TYPES = {1: "float", 11: "double"}
_STRING = 8


@dataclass
class GraphFacts:
    """What the check learned: operators, opset and the declared inputs and outputs."""

    ops: set[str] = field(default_factory=set)
    opset: int | None = None
    inputs: list[tuple[str, int, list[int | str]]] = field(default_factory=list)  # name, type, dims
    outputs: list[tuple[str, int, list[int | str]]] = field(default_factory=list)
    initializers: set[str] = field(default_factory=set)
    external_data: bool = False
    subgraphs: bool = False
    functions: int = 0


def check_graph(data: bytes, source: str, *, allow_foreign: bool = False) -> GraphFacts:
    """Parse ``data`` (a serialized ModelProto) and raise a ModelError unless it is a graph of
    linreg's shape; returns the facts either way it passes."""
    try:
        facts = _model_facts(memoryview(data))
    except (IndexError, ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{source}: not a readable ONNX model ({e or 'truncated'})") from None
    except RecursionError:
        raise ModelError(f"{source}: not a linreg model graph (sub-graphs nested too deeply)") \
            from None
    if facts.external_data:
        raise ModelError(f"{source}: the graph keeps tensors in external data files; linreg "
                         "loads self-contained models only")
    if allow_foreign:
        return facts
    foreign = sorted(facts.ops - ALLOWED_OPS)
    hint = "; if you trust this file, pass --allow-foreign-graph"
    if foreign or facts.subgraphs or facts.functions:
        what = ", ".join(foreign[:5]) or ("sub-graphs" if facts.subgraphs else "local functions")
        raise ModelError(f"{source}: not a linreg model graph (it uses {what}){hint}")
    inputs = [i for i in facts.inputs if i[0] not in facts.initializers]
    outputs = facts.outputs
    if len(outputs) > 1 and outputs[-1][0] == CONTRIBUTIONS:
        name, elem, dims = outputs[-1]
        if elem != outputs[0][1] or len(dims) != 2 or not isinstance(dims[1], int) \
                or dims[1] < 1:
            raise ModelError(f"{source}: the contributions output is not a float [batch, "
                             f"width] of the prediction's type{hint}")
        outputs = outputs[:-1]
    if len(outputs) == 1 + len(INTERVAL_OUTPUTS) and \
            [o[0] for o in outputs] == [PREDICTION, *INTERVAL_OUTPUTS]:
        if any(o[1:] != outputs[0][1:] for o in outputs):
            raise ModelError(f"{source}: the interval outputs differ in type or shape from "
                             f"'prediction'{hint}")
        outputs = outputs[:1]
    if len(outputs) != 1 or not inputs:
        raise ModelError(f"{source}: not a linreg model graph ({len(inputs)} inputs and "
                         f"{len(facts.outputs)} outputs; expected one output, or prediction "
                         f"and its intervals or contributions){hint}")
    if len(inputs) > 1 or inputs[0][1] == _STRING:  # raw columns: one [batch, 1] each
        for name, elem, dims in inputs:
            if elem not in (*_FLOAT_TYPES, _STRING) or dims[1:] != [1] or len(dims) != 2:
                raise ModelError(f"{source}: input {name!r} is not a raw column (float or "
                                 f"string [batch, 1]){hint}")
            if elem != _STRING and elem != outputs[0][1]:
                raise ModelError(f"{source}: input {name!r} and the output have different "
                                 f"element types{hint}")
        inputs = [(inputs[0][0], outputs[0][1], inputs[0][2])]  # the output check below
    for kind, (name, elem, dims) in (("input", inputs[0]), ("output", outputs[0])):
        if elem not in _FLOAT_TYPES or len(dims) != 2 or not isinstance(dims[1], int) \
                or dims[1] < 1:
            shown = "[" + ", ".join(str(d) for d in dims) + "]"
            raise ModelError(f"{source}: {kind} {name!r} is declared as {shown} of element type "
                             f"{elem}; a linreg model has float [batch, width] with a fixed "
                             f"width{hint}")
    if inputs[0][1] != outputs[0][1]:
        raise ModelError(f"{source}: input and output have different element types{hint}")
    return facts


# ------------------------------------------------------------------ protobuf wire format

def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)`` of one message; value is an int or the bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = 0, pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ValueError("field runs past the end")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = 0, pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        if pos > end:
            raise ValueError("truncated")
        yield number, wire, value


def _text(value: int | memoryview) -> str:
    return bytes(value).decode("utf-8") if isinstance(value, memoryview) else ""


def _model_facts(buf: memoryview) -> GraphFacts:
    facts = GraphFacts()
    graph = None
    for number, wire, value in _fields(buf):
        if number == 7 and wire == 2:  # ModelProto.graph
            graph = value
        elif number == 8 and wire == 2:  # opset_import
            domain, version = "", None
            for n, _, v in _fields(value):
                if n == 1:
                    domain = _text(v)
                elif n == 2 and isinstance(v, int):
                    version = v
            if domain in _STANDARD_DOMAINS:
                facts.opset = version
        elif number == 25 and wire == 2:  # functions
            facts.functions += 1
    if graph is None:
        raise ValueError("no graph")
    _graph_facts(graph, facts, top=True)
    return facts


def _graph_facts(graph: memoryview, facts: GraphFacts, *, top: bool) -> None:
    for number, wire, value in _fields(graph):
        if wire != 2:
            continue
        if number == 1:  # node
            _node_facts(value, facts)
        elif number == 5 and top:  # initializer (TensorProto)
            facts.initializers.add(_tensor_name(value, facts))
        elif number == 5:
            _tensor_name(value, facts)
        elif number in (11, 12) and top:  # input, output (ValueInfoProto)
            (facts.inputs if number == 11 else facts.outputs).append(_value_info(value))


def _node_facts(node: memoryview, facts: GraphFacts) -> None:
    op, domain = "", ""
    for number, wire, value in _fields(node):
        if number == 4:
            op = _text(value)
        elif number == 7:
            domain = _text(value)
        elif number == 5 and wire == 2:  # attribute: a graph inside means control flow
            for n, w, v in _fields(value):
                if n in (6, 11) and w == 2:
                    facts.subgraphs = True
                    _graph_facts(v, facts, top=False)
                elif n == 5 and w == 2:  # attribute tensor
                    _tensor_name(v, facts)
    facts.ops.add(op if domain in _STANDARD_DOMAINS else f"{domain}.{op}")


def _tensor_name(tensor: memoryview, facts: GraphFacts) -> str:
    name = ""
    for number, _, value in _fields(tensor):
        if number == 8:
            name = _text(value)
        elif number == 13 or (number == 14 and value == 1):  # external_data, data_location
            facts.external_data = True
    return name


def _value_info(info: memoryview) -> tuple[str, int, list[int | str]]:
    name, elem, dims = "", 0, []
    for number, wire, value in _fields(info):
        if number == 1:
            name = _text(value)
        elif number == 2 and wire == 2:  # TypeProto
            for n, w, tensor in _fields(value):
                if n != 1 or w != 2:  # tensor_type only
                    continue
                for tn, tw, tv in _fields(tensor):
                    if tn == 1 and isinstance(tv, int):
                        elem = tv
                    elif tn == 2 and tw == 2:  # TensorShapeProto
                        for dn, dw, dim in _fields(tv):
                            if dn == 1 and dw == 2:
                                dims.append(_dim(dim))
    return name, elem, dims


def _dim(dim: memoryview) -> int | str:
    for number, _, value in _fields(dim):
        if number == 1 and isinstance(value, int):
            return value
        if number == 2:
            return _text(value)
    return "?"
