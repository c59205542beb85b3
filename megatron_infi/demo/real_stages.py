"""The real model's track of the demo (`make demo-real`): SmolLM2-135M-Instruct (assets.smollm2_dir)
through continued pretraining from its HF weights, then post-training on a verifiable task, each stage
through the same entry points a user runs; and the `real_model` section of summary.json."""

from __future__ import annotations

import json
from pathlib import Path

from megatron_infi.demo.stage import Demo, DemoCheckFailed, loss_trend, torchrun

STEP0_TOLERANCE = 1e-3  # fp32 step-0 loss of the converted model vs the HF model


def stage_cpt(demo: Demo) -> dict:
    """from-hf (PP=2) -> CPT on PubMedQA abstracts with the step-0 validation -> parity with the HF
    model on the same windows -> the CPT model exported back to HF (evaluated with the others)."""
    from megatron_infi.checkpoints_tools import step0
    from megatron_infi.checkpoints_tools.to_hf import export
    from megatron_infi.demo import real_cpt
    from megatron_infi.training.distributed import shutdown

    hf, ckpt = real_cpt.convert_smollm2(demo.path("cpt", "smollm2-mcore"), pp=2)
    prefix = real_cpt.write_domain_corpus(demo.path("cpt", "corpus"), ckpt / "tokenizer")
    run_dir = demo.path("cpt", "run")
    torchrun("megatron_infi.train", real_cpt.cpt_overrides(ckpt, prefix, run_dir), 2, run_dir / "train.log")
    parity = step0.compare(run_dir, hf)
    if parity["abs_diff"] > STEP0_TOLERANCE:
        raise DemoCheckFailed(f"cpt: step-0 loss differs from the HF model's: {parity}")
    valid = real_cpt.valid_losses(run_dir)
    first, last = valid[0], valid[max(valid)]
    if last >= first:
        raise DemoCheckFailed(f"cpt: held-out domain loss did not fall ({first:.3f} -> {last:.3f})")
    exported = export(run_dir / "checkpoints", demo.path("cpt", "hf"))
    shutdown()  # the exporter's one-process group; post-training starts its own runtime
    keys = ("step0_loss_megatron", "step0_loss_hf", "tp", "pp")
    return {
        "artifact": str(exported),
        **{key: parity[key] for key in keys},
        "valid_loss": [first, last],
        "summary": f"step-0 loss {parity['step0_loss_megatron']:.4f} (HF {parity['step0_loss_hf']:.4f}, "
        f"TP={parity['tp']} PP={parity['pp']}); held-out PubMed loss {first:.3f} -> {last:.3f}",
    }


def stage_real_sft_data(demo: Demo) -> dict:
    """Task data (decontaminated), self-teacher synthesis (rejection sampling), InfiAlign selection."""
    from megatron_infi import assets
    from megatron_infi.demo import real_posttrain as real

    base = assets.smollm2_dir()
    data = real.write_task_data(demo.path("real_sft_data", "task"), train_size=400, pair_problems=60)
    synthesized = real.synthesize(base, data["seeds"], demo.path("real_sft_data", "synthesis"))
    selected = real.select(synthesized, data["held_out"], base, demo.path("real_sft_data", "selection"))
    stats = json.loads(selected["stats"].read_text())
    task = data["stats"]
    return {
        "artifact": str(selected["report"]),
        "phase1": str(selected["phase1"]),
        "phase2": str(selected["phase2"]),
        "pair_problems": str(data["pair_problems"]),
        "task": task,
        "summary": f"{stats['curriculum']['phase1']} + {stats['curriculum']['phase2']} self-generated verified "
        f"answers from {task['synthesis_seeds']} problems ({task['train_contaminated']} training problems "
        f"dropped by decontamination against {task['held_out']} held-out)",
    }


def stage_real_sft(demo: Demo) -> dict:
    from megatron_infi import assets
    from megatron_infi.demo import real_posttrain as real

    data = demo.results["real_sft_data"]
    result = real.sft(assets.smollm2_dir(), Path(data["phase1"]), Path(data["phase2"]), demo.path("real_sft"))
    trends = ", ".join(f"{p['phase']} {loss_trend(p['losses'])}" for p in result["phases"])
    return {"artifact": result["final_model"], "summary": f"loss {trends}"}


def stage_real_dpo_pairs(demo: Demo) -> dict:
    from megatron_infi.demo import real_posttrain as real

    problems = Path(demo.results["real_sft_data"]["pair_problems"])
    result = real.dpo_pairs(demo.results["real_sft"]["artifact"], problems, demo.path("real_dpo_pairs"))
    return {
        "artifact": str(result["pairs_file"]),
        "summary": f"{result['pairs']} pairs from {result['problems']} problems "
        f"(mean pass rate {result['mean_pass_rate']:.2f})",
    }


def stage_real_dpo(demo: Demo) -> dict:
    from megatron_infi.demo import real_posttrain as real

    result = real.dpo(
        demo.results["real_sft"]["artifact"],
        Path(demo.results["real_dpo_pairs"]["artifact"]),
        demo.path("real_dpo"),
    )
    return {
        "artifact": result["model_dir"],
        "summary": f"loss {loss_trend(result['losses'])}, held-out reward margin "
        f"{result['held_out_before'].get('eval_rewards/margins', float('nan')):.3f} -> "
        f"{result['held_out_after'].get('eval_rewards/margins', float('nan')):.3f}",
    }


def stage_real_eval(demo: Demo) -> dict:
    """Base / CPT / SFT / DPO SmolLM2 on the held-out problems: accuracy, n and 95% interval."""
    from megatron_infi import assets
    from megatron_infi.demo import real_posttrain as real

    models = {
        "base": assets.smollm2_dir(),
        "cpt": demo.results["cpt"]["artifact"],
        "sft": demo.results["real_sft"]["artifact"],
        "dpo": demo.results["real_dpo"]["artifact"],
    }
    table = real.evaluate(models, demo.path("real_eval"))
    row = ", ".join(f"{name} {r['acc']:.1f}%" for name, r in table.items())
    return {
        "artifact": str(demo.path("real_eval", "results.md")),
        "table": table,
        "summary": f"{row} (n={table['base']['n']})",
    }


def real_model_summary(results: dict[str, dict]) -> dict | None:
    """summary.json's `real_model` section: the CPT step-0 parity and the evaluation table."""
    cpt, evaluation = results.get("cpt"), results.get("real_eval")
    if not cpt or not evaluation:
        return None
    return {
        "cpt": {key: cpt[key] for key in ("step0_loss_megatron", "step0_loss_hf", "tp", "pp")},
        "eval": evaluation["table"],
    }


def print_real_model(real: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    cpt = real["cpt"]
    console = Console(width=max(100, Console().width))
    console.print(
        f"SmolLM2-135M-Instruct CPT step-0 loss: megatron-core {cpt['step0_loss_megatron']:.4f} vs HF "
        f"{cpt['step0_loss_hf']:.4f} (|diff| {abs(cpt['step0_loss_megatron'] - cpt['step0_loss_hf']):.1e}, "
        f"TP={cpt['tp']} PP={cpt['pp']}, fp32)"
    )
    table = Table(title="SmolLM2-135M-Instruct on held-out arithmetic (greedy, zero-shot chat)")
    for column in ("stage", "accuracy %", "95% interval", "n"):
        table.add_column(column)
    for stage, row in real["eval"].items():
        low, high = row["ci95"]
        table.add_row(stage, f"{row['acc']:.1f}", f"[{low:.1f}, {high:.1f}]", str(row["n"]))
    console.print(table)
