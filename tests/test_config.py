"""histolib.config: one configuration object per run, validated once, round-tripped through JSON."""

import json

import pytest

from histolib.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from histolib.data.splits import SPLIT_VERSION


def full_config(tmp_path) -> RunConfig:
    table = tmp_path / "groups.csv"
    table.write_text("file,group\n")
    return RunConfig(
        data=DataConfig(spec="folder:/nowhere/ovarian", image_size=224, split_seed=3, groups=str(table),
                        oversample="after"),
        model=ModelConfig(name="mobilenet_025+thresholded", weights="none",
                          options={"freeze": False, "backbone_size": 160}, precision="float32"),
        train=TrainConfig(epochs=12, learning_rate=3e-4, schedule="cosine", warmup_epochs=0.5,
                          class_weight={0: 1.0, 1: 2.5}, augment="subtype", views=4, strategy="default"),
        command="histolib train --data folder:/nowhere/ovarian")


def test_round_trip_through_json(tmp_path):
    config = full_config(tmp_path)
    back = RunConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert back == config
    assert back.train.class_weight == {0: 1.0, 1: 2.5}  # JSON's string keys come back as ints
    assert back.data.groups == str((tmp_path / "groups.csv").resolve())
    assert back.model.weights is None and back.data.split_version == SPLIT_VERSION
    bare = RunConfig(train=TrainConfig(epochs=2))
    assert RunConfig.from_json(json.loads(json.dumps(bare.to_json()))) == bare


def test_the_resume_view_holds_what_must_match_and_nothing_else(tmp_path):
    config = full_config(tmp_path)
    view = config.resume_view()
    for key in ("data.spec", "data.split_seed", "data.groups", "model.name", "model.options", "train.learning_rate",
                "train.seed", "train.schedule", "train.batch_size", "train.augment"):
        assert key in view, key
    for key in ("model.precision", "train.verbose", "train.strategy", "train.validation_steps", "command"):
        assert key not in view, key
    assert view["train.epochs"] == 12  # under the cosine schedule the run ends at its epochs
    assert "train.epochs" not in RunConfig(train=TrainConfig(epochs=12)).resume_view()  # plateau: extendable
    louder = config.replace(train={"verbose": 0, "strategy": None}, model={"precision": "mixed_bfloat16"})
    assert louder.resume_view() == view
    assert config.replace(train={"seed": 1}).resume_view() != view


@pytest.mark.parametrize("make, field", [
    (lambda: TrainConfig(epochs=0), "epochs=0"),
    (lambda: TrainConfig(patience=-1), "patience=-1"),
    (lambda: TrainConfig(learning_rate=0), "learning_rate=0"),
    (lambda: TrainConfig(schedule="step"), "schedule='step'"),
    (lambda: TrainConfig(warmup_epochs=1.0), "warmup_epochs=1.0"),  # plateau takes no warm-up
    (lambda: TrainConfig(epochs=2, schedule="cosine", warmup_epochs=2.0), "warmup_epochs=2.0"),
    (lambda: TrainConfig(augment="pcam-strongest"), "augment='pcam-strongest'"),
    (lambda: TrainConfig(class_weight="inverse"), "class_weight='inverse'"),
    (lambda: TrainConfig(features="on"), "features='on'"),
    (lambda: DataConfig(spec="foldr:/data"), "did you mean"),
    (lambda: DataConfig(spec="folder:"), "needs a directory"),
    (lambda: DataConfig(spec="synthetic-pcam", oversample="twice"), "oversample='twice'"),
    (lambda: DataConfig(spec="synthetic-pcam", groups="no-such-groups.csv"), "no-such-groups.csv"),
    (lambda: DataConfig(spec="synthetic-pcam", split_version=1), "split_version=1"),
    (lambda: DataConfig(spec="synthetic-subtype", folds=5), "fold=None"),
    (lambda: DataConfig(spec="synthetic-subtype", folds=5, fold=5), "fold=5"),
    (lambda: ModelConfig(name="seed-pcm"), "did you mean 'seed-pcam'"),
    (lambda: ModelConfig(name="seed-pcam", options={"freeze": False}), "takes no option ['freeze']"),
    (lambda: ModelConfig(name="seed-pcam", precision="float8"), "precision='float8'"),
])
def test_each_part_checks_its_fields_once_naming_them(make, field):
    with pytest.raises(ValueError) as error:
        make()
    assert field in str(error.value)


def test_unknown_fields_in_a_record_are_refused():
    with pytest.raises(ValueError, match=r"TrainConfig has no field \['epoch'\]"):
        RunConfig.from_json({"train": {"epoch": 3}})
    with pytest.raises(ValueError, match=r"RunConfig has no part \['settings'\]"):
        RunConfig.from_json({"settings": {}})


def test_a_cross_validation_fold_is_a_data_setting():
    fold = DataConfig(spec="synthetic-subtype:200", folds=5, fold=3, split_seed=1)
    assert RunConfig.from_json(json.loads(json.dumps(RunConfig(data=fold).to_json()))).data == fold
    assert RunConfig(data=fold).resume_view()["data.fold"] == 3
    source = fold.source()
    tested = source.rows("test")[0]
    others = [DataConfig(spec="synthetic-subtype:200", folds=5, fold=k, split_seed=1).source().rows("test")[0]
              for k in range(5)]
    assert sorted(int(i) for part in others for i in part) == sorted(range(200))
    assert set(tested.tolist()).isdisjoint(source.rows("train")[0].tolist())
