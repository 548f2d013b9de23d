"""The run config: validation errors that name the file, command-line merging, and saved configs
whose paths work from the repository root and from notebooks/ alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from steelnb import cli
from steelnb.data.config import ConfigError, TrainConfig


def test_bad_config_files_name_the_file_and_the_problem(tmp_path: Path) -> None:
    cases = {
        "unknown.yaml": ("encoder: resnet18\nlearning_rate: 0.1\n", "unknown config field.*learning_rate"),
        "broken.yaml": ("encoder: [resnet18\n", "not valid YAML"),
        "list.yaml": ("- resnet18\n", "expected a mapping"),
        "value.yaml": ("loss: hinge\n", "hinge"),
    }
    for name, (text, problem) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=f"{name}.*{problem}"):
            TrainConfig.from_yaml(tmp_path / name)
    with pytest.raises(ConfigError, match="absent.yaml: config file not found"):
        TrainConfig.from_yaml(tmp_path / "absent.yaml")
    assert issubclass(ConfigError, ValueError)


def test_command_line_options_override_the_file(tmp_path: Path) -> None:
    TrainConfig(encoder="resnet18", epochs=7, batch_size=3).to_yaml(tmp_path / "c.yaml")
    args = cli.build_parser().parse_args(
        ["train", "--config", str(tmp_path / "c.yaml"), "--epochs", "1", "--encoder-weights", "none"]
    )
    cfg = cli.config_from_args(args)
    assert (cfg.encoder, cfg.epochs, cfg.batch_size, cfg.encoder_weights) == ("resnet18", 1, 3, None)
    assert cli.config_from_args(cli.build_parser().parse_args(["train"])) == TrainConfig()


def test_saved_paths_are_relative_to_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run launched from notebooks/ saves ../data/synthetic; read back from the repository root,
    from notebooks/ or from elsewhere, the config points at the same folders."""
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "data" / "synthetic").mkdir(parents=True)
    monkeypatch.chdir(repo / "notebooks")
    cfg = TrainConfig(data_dir="../data/synthetic", out_dir="../weights", run_name="r")
    cfg.to_yaml(cfg.run_dir / "config.yaml")
    saved = repo / "weights" / "r" / "config.yaml"
    on_disk = yaml.safe_load(saved.read_text())
    assert (on_disk["data_dir"], on_disk["out_dir"]) == ("../../data/synthetic", "..")
    for cwd, given in (
        (repo, "weights/r/config.yaml"),
        (repo / "notebooks", "../weights/r/config.yaml"),
        (tmp_path, saved),
    ):
        monkeypatch.chdir(cwd)
        back = TrainConfig.from_yaml(given)
        assert Path(back.data_dir).resolve() == (repo / "data" / "synthetic").resolve()
        assert back.run_dir.resolve() == saved.parent.resolve()
        assert not Path(back.data_dir).is_absolute()
    monkeypatch.chdir(repo)
    assert TrainConfig.from_yaml("weights/r/config.yaml").data_dir == "data/synthetic"
    # a file by hand (or saved before this rule) keeps the command line's meaning: the working folder
    (repo / "mine.yaml").write_text("data_dir: data/synthetic\n")
    monkeypatch.chdir(repo / "notebooks")
    assert TrainConfig.from_yaml("../mine.yaml").data_dir == "data/synthetic"


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_train_from_the_root_with_a_config_a_notebook_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's `steelnb train --config weights/<run>/config.yaml --epochs 1`, from the
    repository root, on a run folder written by a run started in notebooks/."""
    from steelnb.data.synthetic import generate
    from steelnb.model.training import fit

    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    generate(repo / "data" / "synthetic", n_images=12, n_test=0, seed=0)
    monkeypatch.chdir(repo / "notebooks")
    cfg = TrainConfig(
        data_dir="../data/synthetic",
        out_dir="../weights",
        run_name="nb_run",
        subset="all",
        encoder="resnet18",
        height=64,
        width=320,
        epochs=1,
        batch_size=4,
        max_images=8,
        test_share=0.0,
        n_folds=4,
        early_stopping_patience=0,
        device="cpu",
    )
    fit(cfg, progress_bar=False)
    monkeypatch.chdir(repo)
    code = cli.main(
        [
            "train",
            "--config",
            "weights/nb_run/config.yaml",
            "--epochs",
            "1",
            "--run-name",
            "again",
            "--no-evaluate",
        ]
    )
    assert code in (0, None)
    again = TrainConfig.from_yaml(repo / "weights" / "again" / "config.yaml")
    assert Path(again.data_dir).resolve() == (repo / "data" / "synthetic").resolve()
    assert (repo / "weights" / "again" / "best.ckpt").is_file()


def _parameters_cell(notebook: Path) -> dict[str, tuple[str, object]]:
    """{name: (type hint, literal)} of a stored notebook's cell tagged ``parameters``."""
    import ast
    import json

    cells = json.loads(notebook.read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {
        node.target.id: (ast.unparse(node.annotation), ast.literal_eval(node.value))
        for node in tree.body
        if isinstance(node, ast.AnnAssign)
    }


TRAIN_NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_train.ipynb"


def test_03_parameters_are_config_fields_of_the_same_type() -> None:
    """Each 03 parameter named like a config field has the field's type (a list for a tuple or
    list field: papermill's literals; the type beside None for a field PARAMETER_NONE reads)."""
    import types
    import typing

    from steelnb.data.config import PARAMETER_NONE

    hints = typing.get_type_hints(TrainConfig)
    params = _parameters_cell(TRAIN_NOTEBOOK)
    shared = [name for name in params if name in hints]
    assert len(shared) >= 40  # the cell is found and read
    for name in shared:
        hint, value = params[name]
        field_type = hints[name]
        union = typing.get_origin(field_type) in (typing.Union, types.UnionType)
        options = [t for t in typing.get_args(field_type) if t is not type(None)] if union else [field_type]
        # a field that may be None is one PARAMETER_NONE reads, and the other way round
        assert (name in PARAMETER_NONE) == (union and type(None) in typing.get_args(field_type)), name
        bases = {typing.get_origin(t) or t for t in options}
        bases = {list if b in (list, tuple) else b for b in bases}
        assert bases == {eval(hint)}, f"03's {name}: {hint}, the config field: {field_type}"
        assert isinstance(value, eval(hint)), f"03's {name} = {value!r} is not a {hint}"


def test_03_defaults_differ_from_the_config_only_where_declared() -> None:
    """Every default of 03's parameters cell that differs from TrainConfig's (after the literals
    that stand for None) is in NOTEBOOK_DEFAULTS with that value and a reason, and nothing else is."""
    from steelnb.data.config import NOTEBOOK_DEFAULTS

    params = {name: value for name, (_, value) in _parameters_cell(TRAIN_NOTEBOOK).items()}
    from_notebook = TrainConfig.from_parameters(params).to_dict()
    defaults = TrainConfig().to_dict()
    differ = {k: v for k, v in from_notebook.items() if v != defaults[k]}
    assert differ == {k: value for k, (value, _) in NOTEBOOK_DEFAULTS.items()}
    assert all(len(reason) > 20 for _, reason in NOTEBOOK_DEFAULTS.values())


def test_from_parameters_reads_the_none_literals_and_ignores_other_names() -> None:
    cfg = TrainConfig.from_parameters(
        {"encoder_weights": "", "bn_momentum": 0.0, "drop_path_rate": -1.0, "n_show": 3, "epochs": 3}
    )
    assert (cfg.encoder_weights, cfg.bn_momentum, cfg.drop_path_rate, cfg.epochs) == (None, None, None, 3)
    cfg = TrainConfig.from_parameters(
        {"encoder_weights": "imagenet", "bn_momentum": 0.1, "drop_path_rate": 0.0}
    )
    assert (cfg.encoder_weights, cfg.bn_momentum, cfg.drop_path_rate) == ("imagenet", 0.1, 0.0)
    widths = TrainConfig.from_parameters({"decoder_channels": [64, 32, 16, 8, 4]}).decoder_channels
    assert widths == (64, 32, 16, 8, 4)  # a list in the cell, a tuple in the config
    with pytest.raises(ConfigError, match="notebook parameters.*loss='hinge'"):
        TrainConfig.from_parameters({"loss": "hinge"})
