"""Print benchmark JSON lines (from train_throughput.py) as a markdown table."""

import json
import sys


def main(path: str) -> None:
    with open(path) as handle:
        rows = [json.loads(line) for line in handle if line.strip().startswith("{")]
    print("| config | tokens/s | MFU | peak GiB | step s |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {row['label']} | {row['error']} | | | |")
            continue
        print(
            f"| {row['label']} | {row['tokens_per_s']:,} | {100 * row['mfu']:.1f}% | "
            f"{row['peak_mem_gib']:.1f} | {row['step_s_median']:.3f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
