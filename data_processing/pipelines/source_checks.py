"""Per-source accounting of a pretraining data run, so that silent loss cannot look like a normal run.

From the per-step stats (readers count their quarantine, filters their drops per source and reason),
each source's documents are followed through the pipeline. A step that drops more than half of what
reached it from a source is a warning (printed, in manifest.json and report.md); a source left with no
documents fails the run, naming the step that removed the last ones, unless its config says
`allow_empty: true`.
"""

from __future__ import annotations

from megatron_infi.errors import DataError

DROP_WARNING_FRACTION = 0.5
TOP_REASONS = 3


class EmptySourceError(DataError):
    """A source has no documents left after the pipeline (and its config does not allow that): bad
    input, exit 2."""


def _step_label(row: dict) -> str:
    return row["step"].split(": ", 1)[-1]  # datatrove prefixes the step type ("🔻 - FILTER: ")


def _reasons(reasons: dict[str, int]) -> str:
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:TOP_REASONS]
    return ", ".join(f"{k}: {v}" for k, v in top) or "no reason given"


def source_flow(config: dict, stages: dict[str, list[dict]]) -> dict[str, dict]:
    """Per source, in pipeline order: each step that saw its documents, with in / dropped / reasons.

    The input stage has one reader per source, in config order; later steps record drops per source.
    """
    readers = stages.get("input", [])
    flow = {}
    for i, source in enumerate(config["sources"]):
        reader = readers[i] if i < len(readers) else {"step": source["name"], "kept": 0, "dropped": 0}
        left = reader["kept"]
        steps = [
            {
                "stage": "input",
                "step": _step_label(reader),
                "in": reader["kept"] + reader["dropped"],
                "dropped": reader["dropped"],
                "reasons": reader.get("reasons", {}),
            }
        ]
        for stage, rows in stages.items():
            if stage == "input":
                continue
            for row in rows:
                reasons = row.get("by_source", {}).get(source["name"], {})
                if left == 0 and not reasons:
                    continue
                dropped = sum(reasons.values())
                steps.append(
                    {
                        "stage": stage,
                        "step": _step_label(row),
                        "in": left,
                        "dropped": dropped,
                        "reasons": reasons,
                    }
                )
                left -= dropped
        flow[source["name"]] = {"records": steps[0]["in"], "documents_left": left, "steps": steps}
    return flow


def drop_warnings(flow: dict[str, dict]) -> list[dict]:
    warnings = []
    for source, info in flow.items():
        for step in info["steps"]:
            if step["in"] and step["dropped"] / step["in"] > DROP_WARNING_FRACTION:
                warnings.append(
                    {
                        "source": source,
                        **step,
                        "message": f"source {source!r}: step '{step['step']}' ({step['stage']}) dropped "
                        f"{step['dropped']} of {step['in']} documents "
                        f"({step['dropped'] / step['in']:.0%}; {_reasons(step['reasons'])})",
                    }
                )
    return warnings


def empty_sources(flow: dict[str, dict], config: dict) -> list[dict]:
    allowed = {s["name"]: bool(s.get("allow_empty")) for s in config["sources"]}
    paths = {s["name"]: s["path"] for s in config["sources"]}
    empty = []
    for source, info in flow.items():
        if info["documents_left"] > 0:
            continue
        removing = [s for s in info["steps"] if s["dropped"]]
        if removing:
            last = removing[-1]
            message = (
                f"source {source!r} has no documents left: step '{last['step']}' ({last['stage']}) removed "
                f"the last {last['dropped']} ({_reasons(last['reasons'])})"
            )
        else:
            message = f"source {source!r} has no documents: no records were read from {paths[source]}"
        empty.append({"source": source, "allow_empty": allowed[source], "message": message})
    return empty


def source_report(config: dict, stages: dict[str, list[dict]]) -> dict:
    """The manifest's per-source fields: flow, warnings, empty sources."""
    flow = source_flow(config, stages)
    return {
        "source_flow": flow,
        "warnings": drop_warnings(flow),
        "empty_sources": empty_sources(flow, config),
    }


def check_sources(manifest: dict, allow_empty: dict[str, bool], echo) -> None:
    """Print the warnings; raise EmptySourceError for an empty source that is not allowed to be."""
    for warning in manifest["warnings"]:
        echo(f"warning: {warning['message']}")
    failed = []
    for empty in manifest["empty_sources"]:
        if allow_empty.get(empty["source"], False):
            echo(f"warning: {empty['message']} (allowed: allow_empty is true)")
        else:
            failed.append(empty["message"])
    if failed:
        raise EmptySourceError("; ".join(failed) + " (set allow_empty: true on the source to accept this)")
