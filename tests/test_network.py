"""Network descriptions: what is accepted, and a clear error for everything else."""

import json

import pytest

from sd_hw.errors import NetworkSpecError
from sd_hw.network import Network


def conv(name, cin, cout, k=3, **extra):
    return {"type": "conv2d", "name": name, "in_channels": cin, "out_channels": cout,
            "kernel_size": k, **extra}


GOOD = {"input_shape": [1, 8, 8], "layers": [
    conv("c1", 1, 4), {"type": "relu"}, {"type": "maxpool2d"},
    conv("c2", 4, 6, 1), {"type": "flatten"},
    {"type": "linear", "name": "fc", "in_features": 96, "out_features": 10}]}


def test_shapes_are_inferred_layer_by_layer():
    network = Network.from_dict(GOOD)
    assert network.shapes == ((1, 8, 8), (4, 8, 8), (4, 8, 8), (4, 4, 4), (6, 4, 4), (96,),
                              (10,))
    assert [layer.name for layer in network.compute_layers] == ["c1", "c2", "fc"]
    assert network.compute_layers[1].weight_shape == (6, 4, 1, 1)
    assert network.layers[1].name == "relu1"


def test_json_round_trip():
    network = Network.from_dict(GOOD)
    assert Network.from_json(network.to_json()) == network


def mutate(path_value):
    description = json.loads(json.dumps(GOOD))
    path, value = path_value
    target = description
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return description


@pytest.mark.parametrize("change, message", [
    ((("layers", 0, "type"), "conv3d"), r"layer 0: unsupported layer type 'conv3d'; supported"),
    ((("layers", 0, "kernel_size"), 5), r"layer 0 \('c1'\): unsupported kernel_size 5"),
    ((("layers", 0, "stride"), 3), r"layer 0 \('c1'\): unsupported stride 3; supported strides"),
    ((("layers", 0, "stride"), True), r"layer 0 \('c1'\): unsupported stride True"),
    ((("layers", 0, "padding"), 2), r"unsupported padding 2 for kernel_size 3; supported: 0 or 1"),
    ((("layers", 0, "in_channels"), 3), r"in_channels is 3 but the input has 1 channels"),
    ((("layers", 5, "in_features"), 95), r"in_features is 95 but the input has 96 features"),
    ((("layers", 3, "out_channels"), 0), r"'out_channels' must be an integer from 1 to 65535"),
    ((("layers", 3, "name"), "c1"), r"layer 3 \('c1'\): duplicate layer name"),
    ((("layers", 2, "kernel_size"), 3), r"only 2x2 max pooling"),
    ((("layers", 0, "dilation"), 2), r"unknown field\(s\) 'dilation'"),
    ((("input_shape",), [8, 8]), r"input_shape must be \[features\] or \[channels, height"),
    ((("layers", 4), {"type": "relu"}), r"linear needs a flat input"),
])
def test_bad_descriptions_name_the_problem(change, message):
    with pytest.raises(NetworkSpecError, match=message):
        Network.from_dict(mutate(change), source="model.json")


def test_invalid_json_and_empty_network():
    with pytest.raises(NetworkSpecError, match=r"m.json: not valid JSON"):
        Network.from_json("{", source="m.json")
    with pytest.raises(NetworkSpecError, match="the network has no layers"):
        Network.from_dict({"input_shape": [3], "layers": []})
    with pytest.raises(NetworkSpecError, match="expected a JSON object"):
        Network.from_dict([1, 2])
