"""The YAML data files are checked against JSON schemas (bench/schemas/): the shipped ones pass, and a broken copy
is refused with a message naming the file, the place in it and what is wrong."""

import copy

import pytest
import yaml

from bench import BenchError
from bench import experiments as ex
from bench.claims.registry import CLAIMS_DIR, papers
from bench.schema import check
from bench.verdicts import cells as vd


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def refused(data, name, path, message):
    with pytest.raises(BenchError) as err:
        check(data, name, path)
    from bench.schema import shown

    assert str(err.value).startswith(f"{shown(path)}: at ") and message in str(err.value), str(err.value)
    return str(err.value)


def test_the_shipped_files_pass():
    assert ex.profiles() and vd.tolerances() and papers()
    for paper in papers():
        assert ex.grid(paper)["paper"] == paper


def test_a_broken_profile_is_named():
    data = copy.deepcopy(load(ex.PROFILES_FILE))
    data["smoke"]["seeds"] = 0
    msg = refused(data, "profiles", ex.PROFILES_FILE, "0 is less than the minimum of 1")
    assert "at smoke/seeds" in msg
    data = copy.deepcopy(load(ex.PROFILES_FILE))
    data["paper"]["epochz"] = 3
    refused(data, "profiles", ex.PROFILES_FILE, "'epochz' was unexpected")


def test_a_broken_tolerance_is_named():
    data = copy.deepcopy(load(vd.TOLERANCES))
    del data["metrics"]["test_accuracy"]["points"], data["metrics"]["test_accuracy"]["relative"]
    assert "at metrics/test_accuracy" in refused(data, "tolerances", vd.TOLERANCES, "is not valid under any")
    data = copy.deepcopy(load(vd.TOLERANCES))
    data["alpha"] = 5
    refused(data, "tolerances", vd.TOLERANCES, "5 is greater than or equal to the maximum of 1")
    data = copy.deepcopy(load(vd.TOLERANCES))
    data["correction"] = "fdr"
    refused(data, "tolerances", vd.TOLERANCES, "'fdr' is not one of")
    data = copy.deepcopy(load(vd.TOLERANCES))
    data["metrics"]["params"]["points"] = 1  # an exact count has no band
    assert "at metrics/params" in refused(data, "tolerances", vd.TOLERANCES, "should not be valid")


def test_a_broken_grid_is_named():
    path = ex.GRIDS_DIR / "cruciata.yaml"
    data = copy.deepcopy(load(path))
    del data["settings"][1]["source"]
    assert "at settings/1" in refused(data, "grid", path, "'source' is a required property")
    data = copy.deepcopy(load(path))
    data["settings"][0]["match"] = {"datset": "mnist"}
    refused(data, "grid", path, "'datset' was unexpected")


@pytest.mark.parametrize(
    "where,key,value,message",
    [
        ("set", "optimiser", "adam", "'optimiser' was unexpected); did you mean 'optimizer' for 'optimiser'?"),
        ("set", "optimizer", "adamw2", "'adamw2' is not one of ['sgd', 'adam']"),
        ("set", "epochs", -5, "-5 is less than the minimum of 1"),
        ("set", "batch_size", "big", "'big' is not of type 'integer'"),
        ("method_options", "epochs_per_layr", 3, "did you mean 'epochs_per_layer' for 'epochs_per_layr'?"),
        ("model", "dropuot", 0.5, "did you mean 'dropout' for 'dropuot'?"),
    ],
)
def test_a_typo_or_bad_value_in_a_grid_setting_is_named(where, key, value, message):
    path = ex.GRIDS_DIR / "karimi.yaml"
    data = copy.deepcopy(load(path))
    target = data["settings"][0]["set"]
    if where != "set":
        target = target.setdefault(where, {})
    target[key] = value
    refused(data, "grid", path, message)


def test_a_bad_hierarchy_entry_is_named():
    path = ex.GRIDS_DIR / "ma.yaml"
    data = copy.deepcopy(load(path))
    data["architectures"]["vgg16_e1"]["hierarchy"] = [3, 3, "x"]
    assert "at architectures/vgg16_e1/hierarchy/2" in refused(data, "grid", path, "'x' is not of type 'integer'")


def test_a_broken_papers_file_is_named():
    path = CLAIMS_DIR / "papers.yaml"
    data = copy.deepcopy(load(path))
    data["ma"]["tables"]["I"]["shape"] = [14]
    assert "at ma/tables/I/shape" in refused(data, "papers", path, "is too short")


def test_a_yaml_syntax_error_or_a_non_utf8_byte_is_one_message(tmp_path):
    from bench.schema import load as load_checked

    broken = tmp_path / "profiles.yaml"
    broken.write_text("smoke:\n  seeds: [1, 2\n  data: synthetic\n", encoding="utf-8")
    with pytest.raises(BenchError, match=r"profiles.yaml: YAML syntax error at line 3, column \d+: "):
        load_checked(broken, "profiles")
    broken.write_bytes(b"smoke: \xff\n")
    with pytest.raises(BenchError, match=r"profiles.yaml: not UTF-8 text"):
        load_checked(broken, "profiles")
