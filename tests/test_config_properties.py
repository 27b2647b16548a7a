"""Property tests (hypothesis) of the params loader and the `--set key=value` parser."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.config import ParamsError, apply_overrides, load_params, parse_override, validate

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def as_yaml(value) -> str:
    """A value as `--set` takes it: one line of YAML."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


KEY = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8)
SCALAR = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
    st.none(), st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=10),
)  # fmt: skip


@given(path=st.lists(KEY, min_size=1, max_size=4), value=SCALAR)
def test_parse_override_round_trips_yaml_values(path, value):
    text = f"{'.'.join(path)}={as_yaml(value)}"
    parsed_path, parsed_value = parse_override(text)
    assert parsed_path == path
    assert parsed_value == value or (value is None and parsed_value is None)


@given(text=st.text(max_size=30))
def test_parse_override_never_crashes_otherwise(text):
    try:
        path, _ = parse_override(text)
    except ParamsError as exc:
        assert "--set" in str(exc)
    else:
        assert path and all(path)


# (dotted key, a strategy of values the model accepts)
VALID = {
    "train.lr": st.floats(1e-6, 10.0),
    "train.batch_size": st.integers(1, 4096),
    "train.max_epochs": st.integers(1, 500),
    "train.patience": st.one_of(st.none(), st.integers(1, 50)),
    "split.test_size": st.floats(0.01, 0.99),
    "split.seed": st.integers(0, 2**31),
    "preprocess.scaler": st.sampled_from(["standard", "minmax", "robust", "none"]),
    "train.min_steps": st.integers(0, 10_000),
    "split.n_train": st.none(),  # a number only with method ordered (an inert key is refused)
}
INVALID = {
    "train.lr": st.one_of(st.floats(max_value=0.0, allow_nan=False), st.just("fast")),
    "train.batch_size": st.integers(max_value=0),
    "train.max_epochs": st.one_of(st.integers(max_value=0), st.just([1])),
    "split.test_size": st.one_of(
        st.floats(min_value=1.0, allow_infinity=False),
        st.floats(max_value=0.0, allow_infinity=False),
    ),
    "preprocess.scaler": st.text(max_size=6).filter(
        lambda s: s not in ("standard", "minmax", "robust", "none")
    ),
    "train.min_steps": st.integers(max_value=-1),
    "datasets.adult.data_id": st.integers(max_value=0),
}


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_valid_overrides_are_taken_as_given(data):
    key = data.draw(st.sampled_from(sorted(VALID)))
    value = data.draw(VALID[key])
    params = validate(
        apply_overrides(
            BASE,
            [f"{key}={as_yaml(value)}"],
        )
    )
    node = params
    for part in key.split("."):
        node = getattr(node, part)
    assert node == value or (
        isinstance(value, float) and abs(node - value) <= 1e-12 * max(1, abs(value))
    )


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_invalid_values_are_refused_naming_the_full_key(data):
    key = data.draw(st.sampled_from(sorted(INVALID)))
    value = data.draw(INVALID[key])
    raw = copy.deepcopy(BASE)
    node = raw
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(ParamsError) as info:
        validate(raw)
    assert key in str(info.value)


@settings(max_examples=40, deadline=None)
@given(
    section=st.sampled_from(sorted(set(BASE) - {"datasets"})),  # a new key there is an entry
    name=KEY.filter(lambda k: k not in ("train",)),
)
def test_unknown_keys_are_refused_in_every_section(section, name):
    raw = copy.deepcopy(BASE)
    if not isinstance(raw[section], dict) or name in raw[section]:
        return
    raw[section][name] = 1
    with pytest.raises(ParamsError, match=rf"{section}\.{name}: unknown key"):
        validate(raw)


def test_loader_reads_the_project_file_unchanged():
    assert validate(copy.deepcopy(BASE)) == load_params(ROOT / "params.yaml")
