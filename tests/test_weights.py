"""Transfer learning helpers: weights come only from safetensors files (a pickle is refused
unopened), tensors transfer by name and shape with every other one reported and left exactly as
initialised, freezing respects dotted-name boundaries, and a saved model's weights export with
metadata saying which network they fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from tandem.estimators.persistence import write_weights
from tandem.weights import Transfer, freeze, frozen_modules, load_matching, read_weights


def net(n_out: int = 3, seed: int = 0) -> nn.Sequential:
    """A small CNN for 1x6x6 images: conv, BatchNorm (with buffers), linear head named "4"."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, n_out)
    )


def save(state: dict[str, torch.Tensor], path) -> None:
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path))


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class RunsCode:
    """Unpickling this creates ``marker``: proof that a loader ran code from the file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ---------------------------------------------------------------- loading by name and shape


def test_tensors_with_matching_names_and_shapes_are_copied_into_the_module_in_place(tmp_path):
    source, target = net(seed=0), net(seed=1)
    save(source.state_dict(), tmp_path / "w.safetensors")
    weight = target[0].weight
    pointer = weight.data_ptr()
    optimizer = torch.optim.SGD(target.parameters(), lr=0.1)  # built before: must see the copies

    transfer = load_matching(target, tmp_path / "w.safetensors")

    assert transfer.loaded == list(source.state_dict())
    assert transfer.skipped == {}
    assert transfer.unused == []
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name
    assert target[0].weight is weight and weight.data_ptr() == pointer  # the same tensor
    assert optimizer.param_groups[0]["params"][0] is weight
    assert weight.requires_grad


def test_buffers_such_as_batchnorm_running_statistics_transfer(tmp_path):
    source, target = net(seed=0), net(seed=1)
    source.train()
    for _ in range(3):  # moves running_mean/var away from their initial 0 and 1
        source(torch.randn(8, 1, 6, 6) * 3 + 2)
    assert not torch.equal(source[1].running_mean, target[1].running_mean)
    save(source.state_dict(), tmp_path / "w.safetensors")

    transfer = load_matching(target, tmp_path / "w.safetensors")

    for buffer in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert buffer in transfer.loaded
    assert torch.equal(target[1].running_mean, source[1].running_mean)
    assert torch.equal(target[1].running_var, source[1].running_var)
    assert int(target[1].num_batches_tracked) == 3


def test_a_head_of_another_shape_is_reported_and_left_exactly_as_initialised(tmp_path):
    source, target = net(n_out=10, seed=0), net(n_out=3, seed=1)
    save(source.state_dict(), tmp_path / "w.safetensors")
    head_weight, head_bias = target[4].weight.detach().clone(), target[4].bias.detach().clone()

    transfer = load_matching(target, tmp_path / "w.safetensors")

    assert transfer.skipped == {
        "4.weight": "shape [10, 64] in the file, [3, 64] in the module",
        "4.bias": "shape [10] in the file, [3] in the module",
    }
    assert torch.equal(target[4].weight, head_weight)
    assert torch.equal(target[4].bias, head_bias)
    assert torch.equal(target[0].weight, source[0].weight)  # the body did transfer
    assert len(transfer.loaded) == 7
    summary = transfer.summary()
    assert "\n" not in summary
    assert summary.startswith(f"7 tensors loaded from {tmp_path / 'w.safetensors'}; 2 left")
    assert "4.weight (shape [10, 64] in the file, [3, 64] in the module)" in summary


def test_names_missing_from_the_file_and_names_the_module_lacks_are_both_reported(tmp_path):
    source, target = net(seed=0), net(seed=1)
    state = source.state_dict()
    del state["0.bias"]
    state["extra.weight"] = torch.ones(2)
    save(state, tmp_path / "w.safetensors")
    bias = target[0].bias.detach().clone()

    transfer = load_matching(target, tmp_path / "w.safetensors")

    assert transfer.skipped == {"0.bias": "not in the file"}
    assert transfer.unused == ["extra.weight"]
    assert torch.equal(target[0].bias, bias)
    assert "0.bias (not in the file)" in transfer.summary()
    assert "1 in the file unused: extra.weight" in transfer.summary()


def test_the_module_keeps_its_dtype(tmp_path):
    source, target = net(seed=0), net(seed=1).double()
    save(source.state_dict(), tmp_path / "w.safetensors")

    load_matching(target, tmp_path / "w.safetensors")

    assert target[0].weight.dtype == torch.float64
    assert torch.equal(target[0].weight, source[0].weight.double())


def test_a_float_tensor_is_never_cast_into_an_integer_one(tmp_path):
    source, target = net(seed=0), net(seed=1)
    state = source.state_dict()
    state["1.num_batches_tracked"] = torch.tensor(2.7)
    save(state, tmp_path / "w.safetensors")

    transfer = load_matching(target, tmp_path / "w.safetensors")

    assert transfer.skipped == {
        "1.num_batches_tracked": "dtype torch.float32 in the file, torch.int64 in the module"
    }
    assert int(target[1].num_batches_tracked) == 0


class Versioned(nn.Module):
    """A module whose state-dict format changed: version 1 stored its weight transposed, and
    loading converts a version-1 state dict (as torch's own modules do)."""

    _version = 2

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2, 3))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        if local_metadata.get("version", 1) < 2 and prefix + "weight" in state_dict:
            state_dict[prefix + "weight"] = state_dict[prefix + "weight"].t()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def test_the_file_is_read_as_the_module_current_state_dict_format(tmp_path):
    weight = torch.arange(6.0).reshape(2, 3)
    save({"0.weight": weight}, tmp_path / "w.safetensors")
    target = nn.Sequential(Versioned())

    load_matching(target, tmp_path / "w.safetensors")

    assert torch.equal(target[0].weight, weight)  # not converted as if from version 1


def test_weights_that_fit_nothing_are_an_error_naming_both_sides(tmp_path):
    source, target = net(seed=0), net(seed=1)
    before = snapshot(target)
    # the usual mismatch: a training script saved a wrapper, so every name has a prefix
    save({f"model.{k}": v for k, v in source.state_dict().items()}, tmp_path / "w.safetensors")

    with pytest.raises(ValueError, match="w.safetensors: not one tensor fits the module") as err:
        load_matching(target, tmp_path / "w.safetensors")

    assert "model.0.weight" in str(err.value) and "0.weight" in str(err.value)
    for name, tensor in before.items():
        assert torch.equal(target.state_dict()[name], tensor), name


def test_same_names_with_only_other_shapes_say_so(tmp_path):
    source = nn.Sequential(nn.Linear(5, 3))  # weight and bias both differ from Linear(4, 2)
    save(source.state_dict(), tmp_path / "w.safetensors")

    with pytest.raises(ValueError, match=r"other shapes: 0\.weight \(shape \[3, 5\] in the file"):
        load_matching(nn.Sequential(nn.Linear(4, 2)), tmp_path / "w.safetensors")


def test_the_summary_of_many_skipped_tensors_stays_one_line():
    transfer = Transfer(
        loaded=["a"], skipped={f"{i}.weight": "not in the file" for i in range(9)}, unused=[]
    )

    summary = transfer.summary()

    assert summary.startswith("1 tensors loaded; 9 left as initialised: 0.weight (not in")
    assert "4.weight" in summary and "5.weight" not in summary
    assert summary.endswith("(4 more)")
    assert str(transfer) == summary


# ---------------------------------------------------------------- only safetensors is read


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_a_pickled_checkpoint_is_refused_without_being_opened(tmp_path, suffix):
    marker = tmp_path / "code-ran"
    path = tmp_path / f"w{suffix}"
    torch.save({"0.weight": torch.zeros(2), "payload": RunsCode(str(marker))}, path)

    for read in (read_weights, lambda p: load_matching(net(), p)):
        with pytest.raises(ValueError, match=rf"w\{suffix} is a pickled checkpoint") as err:
            read(path)
        assert "unpickling runs code" in str(err.value)
        assert 'safetensors.torch.save_file(model.state_dict(), "x.safetensors")' in str(err.value)
    assert not marker.exists()
    # the file is hostile indeed: loading it the unsafe way runs its code
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_another_suffix_is_refused(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"whatever")

    with pytest.raises(ValueError, match=r"weights\.npz is a \.npz file: only \.safetensors"):
        read_weights(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors does not exist"):
        read_weights(tmp_path / "nothing.safetensors")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_file_is_an_error_naming_it(tmp_path, damage):
    path = tmp_path / "bad.safetensors"
    save(net().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(b"this is not safetensors" if damage == "garbage" else data[: len(data) // 2])

    with pytest.raises(ValueError, match=r"bad\.safetensors is not a valid safetensors file"):
        read_weights(path)
    with pytest.raises(ValueError, match=r"bad\.safetensors is not a valid safetensors file"):
        load_matching(net(), path)


def test_read_weights_returns_the_tensors_on_the_cpu(tmp_path):
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    save(state, tmp_path / "w.safetensors")

    read = read_weights(tmp_path / "w.safetensors")

    assert set(read) == {"a", "b"}
    assert torch.equal(read["a"], state["a"]) and read["b"].dtype == torch.int64
    assert read["a"].device.type == "cpu"


# ---------------------------------------------------------------- freezing


def eleven() -> nn.Sequential:
    """Layers named 0..10: "1" and "10" share a first character, not a name."""
    return nn.Sequential(*(nn.Linear(2, 2) for _ in range(11)))


def test_freeze_a_prefix_stops_at_the_dot(tmp_path):
    module = eleven()

    frozen = freeze(module, ["1"])

    assert frozen == ["1.weight", "1.bias"]
    trainable = [name for name, p in module.named_parameters() if p.requires_grad]
    assert "10.weight" in trainable and "10.bias" in trainable
    assert len(trainable) == 20


def test_freeze_takes_a_single_string_as_one_prefix_and_nested_names():
    module = eleven()
    assert freeze(module, "10") == ["10.weight", "10.bias"]  # not "1" and "0"
    assert module[1].weight.requires_grad and module[0].weight.requires_grad

    nested = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), nn.Linear(2, 2))
    assert freeze(nested, ["0.1", "1.bias"]) == ["0.1.weight", "0.1.bias", "1.bias"]
    assert nested[0][0].weight.requires_grad and nested[1].weight.requires_grad


def test_freeze_an_unknown_prefix_is_an_error_that_lists_the_top_level_names():
    module = eleven()

    with pytest.raises(ValueError, match=r"'11' matches no parameter of the Sequential") as err:
        freeze(module, ["1", "11"])

    assert "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10" in str(err.value)
    assert all(p.requires_grad for p in module.parameters())  # nothing frozen half-way


def test_freeze_refuses_a_buffer_name_and_an_empty_prefix():
    with pytest.raises(ValueError, match="'1.running_mean' matches no parameter"):
        freeze(net(), ["1.running_mean"])
    with pytest.raises(ValueError, match="freeze prefix ''"):
        freeze(net(), [""])


def test_frozen_modules_are_the_submodules_under_the_prefixes():
    module = eleven()
    assert frozen_modules(module, ["1"]) == [module[1]]

    nested = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), nn.Linear(2, 2))
    assert frozen_modules(nested, ["0"]) == [nested[0], nested[0][0], nested[0][1]]
    assert frozen_modules(nested, ["1.weight"]) == []  # a parameter, not a module
    with pytest.raises(ValueError, match="'2' matches no submodule or parameter") as err:
        frozen_modules(nested, ["2"])
    assert "top-level names are 0, 1" in str(err.value)


def test_frozen_batchnorm_in_eval_mode_keeps_its_transferred_statistics():
    module = net()
    freeze(module, ["0", "1"])
    stats = module[1].running_mean.clone()
    module.train()
    for sub in frozen_modules(module, ["0", "1"]):
        sub.eval()

    module(torch.randn(8, 1, 6, 6) * 3 + 2).sum().backward()

    assert torch.equal(module[1].running_mean, stats)
    assert module[0].weight.grad is None and module[1].weight.grad is None
    assert module[4].weight.grad is not None


# ---------------------------------------------------------------- exporting a saved model


def model_folder(path, module: nn.Module, **config):
    path.mkdir(parents=True)
    save(module.state_dict(), path / "weights.safetensors")
    config = {
        "format": "tandem-estimator/1",
        "estimator": "TorchClassifier",
        "params": {"module__hidden_sizes": [8], "module__dropout": 0.1, "lr": 0.01},
        "module_spec": "mlp",
        "n_features_in": 4,
        "n_outputs": 2,
        "feature_names_in": None,
        "history": [],
        "best_epoch": 1,
    } | config
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_write_weights_round_trip_with_metadata(tmp_path):
    source = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    folder = model_folder(tmp_path / "model", source)
    out = tmp_path / "exported" / "deeper" / "w.safetensors"

    result = write_weights(folder, out)

    assert result == {"path": str(out), "tensors": 4, "module": "mlp"}
    assert [p.name for p in out.parent.iterdir()] == ["w.safetensors"]  # no temp file left
    with safe_open(str(out), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["tandem.module"] == "mlp"
    assert metadata["tandem.format"] == "tandem-weights/1" and metadata["format"] == "pt"
    assert metadata["tandem.estimator"] == "TorchClassifier"
    assert metadata["tandem.source"] == str(folder)
    assert json.loads(metadata["tandem.module_params"]) == {
        "module__dropout": 0.1,
        "module__hidden_sizes": [8],
    }
    assert metadata["tandem.n_features_in"] == "4" and metadata["tandem.n_outputs"] == "2"
    target = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert load_matching(target, out).skipped == {}
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    ("config", "out", "error", "match"),
    [
        (
            {"format": "something-else/2"},
            "w.safetensors",
            ValueError,
            r"config\.json is not a tandem",
        ),
        ({}, "w.pt", ValueError, r"w\.pt: the weights are written as safetensors"),
        ({"params": None}, "w.safetensors", ValueError, r"config\.json is incomplete"),
    ],
)
def test_write_weights_refuses_what_is_not_a_tandem_model(tmp_path, config, out, error, match):
    folder = model_folder(tmp_path / "model", nn.Linear(2, 2), **config)

    with pytest.raises(error, match=match):
        write_weights(folder, tmp_path / out)

    assert not (tmp_path / out).exists()


def test_write_weights_names_a_missing_or_unreadable_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.config\.json is missing"):
        write_weights(tmp_path / "nowhere", tmp_path / "w.safetensors")
    folder = model_folder(tmp_path / "model", nn.Linear(2, 2))
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        write_weights(folder, tmp_path / "w.safetensors")


def test_a_fitted_estimator_exports_weights_another_one_starts_from(tmp_path):
    from tandem import TorchClassifier

    X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    first = TorchClassifier(module__hidden_sizes=(8,), max_epochs=1, random_state=0).fit(X, y)
    first.save(tmp_path / "m")

    result = write_weights(tmp_path / "m", tmp_path / "w.safetensors")

    assert result["module"] == "mlp" and result["tensors"] == len(first.module_.state_dict())
    second = TorchClassifier(module__hidden_sizes=(8,), max_epochs=1, random_state=1).fit(X, y)
    transfer = load_matching(second.module_, tmp_path / "w.safetensors")
    assert transfer.skipped == {} and transfer.unused == []
    for name, tensor in first.module_.state_dict().items():
        assert torch.equal(second.module_.state_dict()[name], tensor), name


def test_an_estimator_starts_from_weights_and_keeps_frozen_parts_fixed(tmp_path):
    """``init_weights`` + ``freeze`` on the estimator: the first block (conv and BatchNorm, with
    its running statistics) stays exactly as loaded through fit, save/load and partial_fit;
    the rest trains; a head of another size is reported and left as initialised."""
    from tandem import TorchClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 64)).astype(np.float32)
    y = (X[:, :32].sum(axis=1) > 0).astype(int) + (X[:, 0] > 1)
    cnn = dict(module="cnn", module__channels=[4, 8], module__hidden=16, max_epochs=2,
               batch_size=32, random_state=0)  # fmt: skip
    TorchClassifier(**cnn).fit(X, y).save(tmp_path / "source")
    write_weights(tmp_path / "source", tmp_path / "w.safetensors")
    loaded = read_weights(tmp_path / "w.safetensors")
    est = TorchClassifier(**cnn, init_weights=str(tmp_path / "w.safetensors"), freeze=["1", "2"])
    est.fit(X, (y > 0).astype(int))  # two classes: the head's last layer has another shape
    state = est.module_.state_dict()
    for name in ("1.weight", "2.weight", "2.bias", "2.running_mean", "2.running_var"):
        assert torch.equal(state[name].cpu(), loaded[name]), name
    assert not torch.equal(state["4.weight"].cpu(), loaded["4.weight"])  # trained
    last = max(k for k in state if k.endswith(".weight") and state[k].dim() == 2)
    assert last in est.transfer_.skipped and "shape" in est.transfer_.skipped[last]
    est.save(tmp_path / "tuned")
    again = TorchClassifier.load(tmp_path / "tuned")
    again.partial_fit(X, (y > 0).astype(int))
    assert torch.equal(again.module_.state_dict()["1.weight"].cpu(), loaded["1.weight"])
    with pytest.raises(ValueError, match="never loaded"):
        TorchClassifier(**cnn, init_weights=str(tmp_path / "w.pt")).fit(X, y)
