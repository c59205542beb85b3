"""`infi recipe run`: the shipped recipes load, --dry-run lists their stages in order with the
overrides applied, bad recipes and overrides are config errors (exit 2), and a failing stage stops
the recipe naming the stage and its log (exit 1)."""

import pytest

from megatron_infi import cli
from megatron_infi.config.core import ConfigError
from megatron_infi.recipes import RECIPES, load_recipe, main

SHIPPED = sorted(RECIPES.glob("*.yaml"))


def test_every_shipped_recipe_is_found():
    assert [p.name for p in SHIPPED] == ["infialign.yaml", "infir.yaml"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_dry_run_lists_every_stage_in_order(path, capsys):
    recipe = load_recipe(path)
    assert cli.main(["recipe", "run", str(path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0::2] == [f"# {stage.name}" for stage in recipe.stages]
    for stage, line in zip(recipe.stages, lines[1::2], strict=True):
        assert line.startswith("torchrun" if stage.torchrun else "infi ")


def test_dry_run_applies_overrides_to_one_stage_and_range(capsys):
    path = RECIPES / "infialign.yaml"
    sets = ["--set", "sft:max_length=256", "--set", "dpo:schedule.max_steps=2"]
    assert main([str(path), "--dry-run", "--from", "sft", "--to", "dpo", *sets]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0::2] == ["# sft", "# dpo-problems", "# dpo-pairs", "# dpo"]
    assert lines[1].endswith("infialign_sft.yaml max_length=256")
    assert lines[7].endswith("infialign_dpo.yaml schedule.max_steps=2")


def test_flag_override_replaces_the_flag_value(capsys):
    assert (
        main([str(RECIPES / "infir.yaml"), "--dry-run", "--to", "from-hf", "--set", "from-hf:hf=/m/x"]) == 0
    )
    assert "--hf /m/x --out runs/infir-1b/llama3.2-1b-mcore" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "nosuch:a=1"], "'nosuch' is not a stage of infialign"),
        (["--set", "sft"], "expected STAGE:KEY=VALUE"),
        (["--from", "nosuch"], "'nosuch' is not a stage"),
    ],
)
def test_bad_overrides_exit_2_naming_the_problem(args, message, capsys):
    assert main([str(RECIPES / "infialign.yaml"), "--dry-run", *args]) == 2
    assert message in capsys.readouterr().err


def test_recipe_must_list_infi_commands(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nstages:\n  - {name: a, run: python train.py}\n")
    with pytest.raises(ConfigError, match="run"):
        load_recipe(path)
    path.write_text("name: bad\nstages:\n  - {name: a, run: infi eval}\n  - {name: a, run: infi sft}\n")
    with pytest.raises(ConfigError, match="repeated: \\['a'\\]"):
        load_recipe(path)


def test_failing_stage_stops_the_recipe_naming_its_log(tmp_path, capsys):
    path = tmp_path / "two.yaml"
    path.write_text(
        "name: two\nstages:\n"
        "  - {name: broken, run: infi eval --config missing.yaml}\n"
        "  - {name: never, run: infi eval --config missing.yaml}\n"
    )
    assert main([str(path), "--workdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    log = tmp_path / "logs" / "recipe-two" / "broken.log"
    assert f"stage broken failed (exit 2); log: {log}" in err
    assert "missing.yaml" in log.read_text()
    assert not (log.parent / "never.log").exists()


def test_check_runs_every_stage_dry_run_and_names_a_rejected_config(tmp_path, capsys):
    """--check: each config stage's own --dry-run, in a workdir where nothing was produced yet. Inputs
    that earlier stages write are notes, not failures; a bad value stops the recipe with exit 2,
    naming the stage, after every stage was checked."""
    path = RECIPES / "infialign.yaml"
    assert main([str(path), "--check", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for stage in load_recipe(path).stages:
        assert f"# {stage.name}: config ok" in out
    assert "model: runs/infialign/sft/advanced/model does not exist yet: will be produced by infi sft" in out

    bad = ["--set", "sft:max_length=1", "--workdir", str(tmp_path)]
    assert main([str(path), "--check", *bad]) == 2
    captured = capsys.readouterr()
    assert "# sft: REJECTED: infi sft: config error: max_length: must be >= 16, got 1" in captured.out
    assert "# eval: config ok" in captured.out  # the stages after it were still checked
    assert "stages: sft: config rejected" in captured.err
