"""Running a shipped recipe at toy scale: the overrides it may take (inputs, sizes, models; never a
path from one stage to the next), and the run itself in a shared temporary root."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from megatron_infi.recipes import RECIPES, Recipe, load_recipe, run_recipe
from tests.recipes import toy


def shipped_value(recipe: Recipe, stage: str, key: str):
    """What the shipped recipe gives `key` in `stage`: a flag's value, else the config's (None if unset)."""
    words = recipe.stage(stage).argv()
    if f"--{key}" in words:
        return words[words.index(f"--{key}") + 1]
    value = yaml.safe_load((toy.REPO / words[words.index("--config") + 1]).read_text())
    for part in key.split("."):  # a numeric part indexes a list, as in config overrides
        if part.isdigit():
            index = int(part)
            value = value[index] if isinstance(value, list) and index < len(value) else None
        else:
            value = value.get(part) if isinstance(value, dict) else None
    return value


def check_overrides(recipe: Recipe, sets: list[str], toy_root: Path) -> None:
    """Overrides replace inputs, sizes and models only: never a value that names an earlier stage's
    output (`runs/...`, the links the test is about), and every path they give is a toy input."""
    for item in sets:
        stage, _, assignment = item.partition(":")
        key, _, value = assignment.partition("=")
        assert "runs/" not in json.dumps(shipped_value(recipe, stage, key)), f"{item}: overrides a link"
        if "/" in value and not value.startswith("http://"):
            assert value.startswith(str(toy_root)), f"{item}: a path outside the toy inputs"


def data_pipeline_sets(stage: str, config: str, toy_root: Path) -> list[str]:
    """A pretraining-data stage on toy corpora in each source's own format; the recall and quality
    models (trained by `infi data train-recall / train-quality`, outside the recipe) are not used."""
    cfg = toy.load(config)
    sets = []
    for i, source in enumerate(cfg["sources"]):
        if not source["path"].startswith("runs/"):  # runs/...: an earlier stage's output
            sets.append(
                f"{stage}:sources.{i}.path={toy.write_source(source, i, toy_root / 'corpora' / stage)}"
            )
    for i, bench in enumerate(cfg["decontamination"]["benchmarks"]):
        path = toy.benchmark_file(Path(bench["path"]).name, toy_root)
        sets.append(f"{stage}:decontamination.benchmarks.{i}.path={path}")
    return sets + [
        f"{stage}:recall.enabled=false",
        f"{stage}:quality.edu.enabled=false",
        f"{stage}:quality.math.enabled=false",
        f"{stage}:executor.kind=local",
        f"{stage}:executor.tasks=1",
        f"{stage}:executor.workers=1",
    ]


def benchmark_sets(stage: str, config: str, toy_root: Path) -> list[str]:
    """Every benchmark file of an eval config (and its few-shot split) replaced by a toy file; two
    problems each, one exemplar per few-shot prompt."""
    sets = []
    for i, bench in enumerate(toy.load(config)["benchmarks"]):
        sets.append(f"{stage}:benchmarks.{i}.limit=2")
        if bench.get("fewshot_path"):
            sets.append(f"{stage}:benchmarks.{i}.num_fewshot=1")
        for key in ("path", "fewshot_path"):
            if bench.get(key):
                sets.append(
                    f"{stage}:benchmarks.{i}.{key}={toy.benchmark_file(Path(bench[key]).name, toy_root)}"
                )
    return sets


def run(recipe_name: str, sets: list[str], root: Path, toy_root: Path) -> dict[str, float]:
    """Run the shipped recipe in `root` with `sets`; returns seconds per stage."""
    recipe = load_recipe(RECIPES / f"{recipe_name}.yaml")
    check_overrides(recipe, sets, toy_root)
    seconds = {}
    for stage in recipe.stages:
        start = time.perf_counter()
        run_recipe(recipe, sets, first=stage.name, last=stage.name, workdir=root)
        seconds[stage.name] = round(time.perf_counter() - start, 1)
        print(f"[recipe {recipe_name}] {stage.name} took {seconds[stage.name]} s", flush=True)
    print(f"recipe {recipe_name}: seconds per stage {seconds}")
    return seconds
