"""A paper's stages, in order, on this machine: each stage's output is the next one's input.

A recipe file lists a paper's stages, each the command a user types (`infi ...`). In the shipped
configs every stage's output path is the next stage's input path (`runs/<paper>/...`), so the stages
connect without extra arguments; the recipe tests (tests/recipes/) run them at toy scale.

  infi recipe run launch/recipes/infir.yaml --dry-run       # the stage commands, in order
  infi recipe run launch/recipes/infir.yaml --check         # + each stage's own --dry-run
  infi recipe run launch/recipes/infir.yaml --from anneal --to sft --set sft:max_length=4096

`--set STAGE:KEY=VALUE` changes one stage: a dotted override of its config
(`pretrain:train.micro_batch_size=2`), or a new value for one of its flags (`from-hf:hf=/models/x`).
Stages marked `torchrun` run under torchrun with `--nproc` processes; the others in one process.
A stage's relative config path is read from the repository (where launch/configs lives) unless it
exists under the working directory; every other path is relative to the working directory (default:
the current one). A failing stage stops the recipe (exit 1) naming its log. On a cluster, submit each
stage's sbatch instead (launch/README.md, "Recipes").

input:
  a recipe YAML (launch/recipes/infir.yaml, infialign.yaml):
    name: infir
    stages:
      - {name: from-hf, run: "infi convert from-hf --hf /models/Llama-3.2-1B --out runs/infir-1b/ckpt"}
      - {name: pretrain, run: "infi train ...", torchrun: true}
  each stage reads what its config names (the first stages: your corpora and models)

output (under --workdir):
  runs/<paper>/...                  what the stages write (their configs' output paths)
  logs/recipe-<name>/<stage>.log    each stage's console output
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from megatron_infi.config.core import command_parser, from_dict, load_yaml, validate_tree
from megatron_infi.errors import ConfigError, DataError, RunError, command

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "launch" / "recipes"


@dataclass
class RecipeStage:
    name: str = ""
    run: str = ""  # the command as typed: "infi <command> [args]"
    torchrun: bool = False  # distributed training stage: launched under torchrun

    def validate(self) -> None:
        from megatron_infi.cli import resolve

        words = shlex.split(self.run)
        if not self.name:
            raise ConfigError("name", "is required")
        if words[:1] != ["infi"] or resolve(words[1:]) is None:
            raise ConfigError("run", f"must be an `infi <command> ...` line, got {self.run!r}")

    def argv(self) -> list[str]:
        """The command's words after `infi`."""
        return shlex.split(self.run)[1:]


@dataclass
class Recipe:
    name: str = ""
    description: str = ""
    stages: list[RecipeStage] = field(default_factory=list)

    def validate(self) -> None:
        names = [s.name for s in self.stages]
        if not names:
            raise ConfigError("stages", "list at least one stage")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError("stages", f"stage names must be unique, repeated: {repeated}")

    def stage(self, name: str) -> RecipeStage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(
            "stage", f"{name!r} is not a stage of {self.name} ({', '.join(s.name for s in self.stages)})"
        )


def load_recipe(path: str | Path) -> Recipe:
    if not Path(path).is_file():
        raise DataError(f"recipe file not found: {path}")
    recipe = from_dict(Recipe, load_yaml(path))
    validate_tree(recipe)
    return recipe


def _set(words: list[str], key: str, value: str, stage: str) -> list[str]:
    """Replace the value of flag --key (`--key v` or `--key=v`), else append a config override."""
    flag = f"--{key}"
    for i, word in enumerate(words):
        if word == flag and i + 1 < len(words):
            return [*words[: i + 1], value, *words[i + 2 :]]
        if word.startswith(f"{flag}="):
            return [*words[:i], f"{flag}={value}", *words[i + 1 :]]
    if "--config" not in words:
        raise ConfigError("--set", f"stage {stage} has no flag {flag} and no --config to override")
    return [*words, f"{key}={value}"]


def parse_sets(recipe: Recipe, sets: list[str]) -> dict[str, list[tuple[str, str]]]:
    """["stage:key=value", ...] -> {stage: [(key, value), ...]} (stage names checked)."""
    by_stage: dict[str, list[tuple[str, str]]] = {}
    for item in sets:
        stage, sep, assignment = item.partition(":")
        key, eq, value = assignment.partition("=")
        if not sep or not eq or not key:
            raise ConfigError("--set", f"expected STAGE:KEY=VALUE, got {item!r}")
        recipe.stage(stage)
        by_stage.setdefault(stage, []).append((key, value))
    return by_stage


def stage_command(
    stage: RecipeStage, sets: list[tuple[str, str]], nproc: int, workdir: Path, launch: bool = True
) -> list[str]:
    """The process to start for one stage (the module behind its `infi` command); `launch=False`
    leaves torchrun out (one process, as a dry run needs)."""
    from megatron_infi.cli import resolve

    words = stage.argv()
    for key, value in sets:
        words = _set(words, key, value, stage.name)
    module, rest = resolve(words)
    if "--config" in rest:  # the shipped configs are read from the repository
        i = rest.index("--config") + 1
        config = Path(rest[i])
        if not config.is_absolute() and not (workdir / config).exists():
            rest = [*rest[:i], str(REPO / config), *rest[i + 1 :]]
    if stage.torchrun and launch:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        return [sys.executable, *launcher, "-m", module, *rest]
    return [sys.executable, "-m", module, *rest]


def select_stages(recipe: Recipe, first: str | None, last: str | None) -> list[RecipeStage]:
    names = [s.name for s in recipe.stages]
    start = names.index(recipe.stage(first).name) if first else 0
    end = names.index(recipe.stage(last).name) if last else len(names) - 1
    return recipe.stages[start : end + 1]


def stage_lines(
    recipe: Recipe, sets: list[str] = (), first: str | None = None, last: str | None = None, nproc: int = 1
) -> list[str]:
    """The stages as shell commands, in order, each after a `# <stage>` line (what `--dry-run` shows)."""
    from megatron_infi.cli import resolve

    by_stage = parse_sets(recipe, list(sets))
    lines = []
    for stage in select_stages(recipe, first, last):
        words = stage.argv()
        for key, value in by_stage.get(stage.name, []):
            words = _set(words, key, value, stage.name)
        lines.append(f"# {stage.name}")
        if stage.torchrun:
            module, rest = resolve(words)
            lines.append(f"torchrun --nproc-per-node {nproc} -m {module} {shlex.join(rest)}")
        else:
            lines.append(f"infi {shlex.join(words)}")
    return lines


def check_stages(
    recipe: Recipe,
    sets: list[str] = (),
    first: str | None = None,
    last: str | None = None,
    nproc: int = 1,
    workdir: str | Path = ".",
) -> list[str]:
    """Run each selected stage's own `--dry-run` (the stages with a `--config`): config values, and
    inputs, where those an earlier stage will write are noted. Prints one verdict per stage with its
    notes; raises ConfigError naming the stages whose config was rejected. Returns the checked stages."""
    workdir = Path(workdir).resolve()
    by_stage = parse_sets(recipe, list(sets))
    checked, rejected = [], []
    for stage in select_stages(recipe, first, last):
        command = stage_command(stage, by_stage.get(stage.name, []), nproc, workdir, launch=False)
        if "--config" not in command:
            print(f"# {stage.name}: no config (its flags are checked when it runs)", flush=True)
            continue
        env = {**os.environ, "WORLD_SIZE": str(nproc)} if stage.torchrun else dict(os.environ)
        done = subprocess.run([*command, "--dry-run"], cwd=workdir, env=env, capture_output=True, text=True)
        notes = [line for line in done.stderr.splitlines() if ": note: " in line]
        if done.returncode == 0:
            print(f"# {stage.name}: config ok, {len(notes)} input(s) not there yet", flush=True)
        else:
            reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            print(f"# {stage.name}: REJECTED: {reason}", flush=True)
            rejected.append(stage.name)
        for note in notes:
            print(f"#   {note}")
        checked.append(stage.name)
    if rejected:
        raise ConfigError(
            "stages", f"{', '.join(rejected)}: config rejected by the stage's --dry-run (above)"
        )
    return checked


def run_stage(command: list[str], workdir: Path, log_path: Path) -> int:
    """Run one stage, its output to the console and the log; returns the exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w", buffering=1) as log:  # line-buffered: the log follows the stage live
        log.write(f"$ {shlex.join(command)}\n")
        proc = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in proc.stdout:
            log.write(line)
            sys.stdout.write(line)
        return proc.wait()


def run_recipe(
    recipe: Recipe,
    sets: list[str] = (),
    first: str | None = None,
    last: str | None = None,
    nproc: int = 1,
    workdir: str | Path = ".",
) -> list[str]:
    """Run the stages in order; returns their names. Raises RunError naming a failed stage."""
    workdir = Path(workdir).resolve()
    by_stage = parse_sets(recipe, list(sets))
    done = []
    for stage in select_stages(recipe, first, last):
        command = stage_command(stage, by_stage.get(stage.name, []), nproc, workdir)
        log_path = workdir / "logs" / f"recipe-{recipe.name}" / f"{stage.name}.log"
        print(f"[recipe {recipe.name}] {stage.name}: {shlex.join(command)}", flush=True)
        code = run_stage(command, workdir, log_path)
        if code != 0:
            raise RunError(f"recipe {recipe.name}: stage {stage.name} failed (exit {code}); log: {log_path}")
        done.append(stage.name)
    return done


@command("infi recipe run")
def main(argv: list[str] | None = None) -> int:
    parser = command_parser("infi recipe run", __doc__)
    parser.add_argument("recipe", help="a recipe file, e.g. launch/recipes/infir.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the stage commands in order and exit")
    parser.add_argument(
        "--check", action="store_true", help="with the commands, run each stage's own --dry-run and exit"
    )
    parser.add_argument("--from", dest="first", help="first stage to run (default: the first)")
    parser.add_argument("--to", dest="last", help="last stage to run (default: the last)")
    parser.add_argument("--nproc", type=int, default=1, help="processes for torchrun stages (default 1)")
    parser.add_argument("--workdir", default=".", help="where the stages run (runs/ and logs/ go there)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="STAGE:KEY=VALUE")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe)
    if args.dry_run or args.check:
        for line in stage_lines(recipe, args.sets, args.first, args.last, args.nproc):
            print(line)
        if args.check:
            check_stages(recipe, args.sets, args.first, args.last, args.nproc, args.workdir)
        return 0
    run_recipe(recipe, args.sets, args.first, args.last, args.nproc, args.workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
