import gzip
import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from megatron_infi import assets
from megatron_infi.scoring.code import check_program, map_parallel, network_namespace_prefix, run_program


def humaneval() -> list[dict]:
    with gzip.open(assets.humaneval_jsonl_gz(), "rt") as handle:
        return [json.loads(line) for line in handle]


def test_canonical_humaneval_solutions_all_pass():
    problems = humaneval()
    assert len(problems) == 164
    start = time.monotonic()
    results = list(
        map_parallel(
            lambda p: check_program(p["prompt"] + p["canonical_solution"], p["test"], p["entry_point"]),
            problems,
        )
    )
    failed = [
        (p["task_id"], r.status, r.stderr[-300:])
        for p, r in zip(problems, results, strict=True)
        if not r.passed
    ]
    assert not failed
    print(f"164/164 canonical HumanEval solutions passed in {time.monotonic() - start:.1f}s")


def test_wrong_solution_fails_with_its_assertion():
    problems = humaneval()
    # problem 0's real prompt with a body that ignores its inputs
    wrong = problems[0]["prompt"] + "    return False\n"
    result = check_program(wrong, problems[0]["test"], problems[0]["entry_point"])
    assert result.status == "failed" and not result.passed
    assert "AssertionError" in result.stderr
    assert result.returncode == 1


@pytest.mark.parametrize(
    ("code", "status", "marker"),
    [
        ("import time\ntime.sleep(60)", "timeout", "wall-clock limit"),
        ("while True:\n    pass", "timeout", "wall-clock limit"),
        ("x = bytearray(10**11)", "memory", "MemoryError"),
        ("chunks = []\nwhile True:\n    chunks.append(' ' * 10**7)", "memory", "MemoryError"),
        ("import os\nwhile True:\n    os.fork()", "blocked", "os.fork"),
        ("import multiprocessing as mp\nmp.Process(target=print).start()", "blocked", "os."),
        ("import subprocess\nsubprocess.run(['ls', '/'])", "blocked", "subprocess.Popen"),
        ("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)", "blocked", "socket"),
        ("import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/')", "blocked", "socket"),
        ("import ctypes\nctypes.CDLL(None).fork()", "blocked", "ctypes.dlsym"),
        ("import os\nos.kill(1, 9)", "blocked", "os.kill"),
        ("open('/tmp/sandbox-escape.txt', 'w').write('x')", "blocked", "/tmp/sandbox-escape.txt"),
        ("import os\nos.remove('/etc/hostname')", "blocked", "os.remove"),
        ("while True:\n    print('x' * 100000)", "error", "file-size limit"),
        ("raise SystemExit(3)", "failed", ""),
    ],
)
def test_hostile_programs_are_stopped_with_the_right_status(code, status, marker):
    result = run_program(code, timeout_s=2, memory_mb=512)
    assert result.status == status, (result.status, result.returncode, result.stderr[-500:])
    assert marker in result.stderr
    assert result.seconds < 10


def test_guard_holds_without_a_network_namespace(monkeypatch):
    from megatron_infi.scoring import code

    monkeypatch.setattr(code, "network_namespace_prefix", lambda: ())
    result = run_program("import socket\nsocket.create_connection(('127.0.0.1', 9))")
    assert result.status == "blocked" and "socket" in result.stderr


def test_program_sees_its_stdin_files_and_its_own_dir_only():
    code = (
        "import os, sys\n"
        "open('scratch.txt', 'w').write(open('data.txt').read().upper())\n"
        "print(open('scratch.txt').read(), input(), sorted(os.environ))\n"
    )
    result = run_program(code, stdin="from stdin\n", files={"data.txt": "hello"})
    assert result.passed, result.stderr
    assert result.stdout.startswith("HELLO from stdin")
    assert "OPENAI_API_KEY" not in result.stdout and "PYTHONPATH" not in result.stdout


def test_parallel_runs_do_not_interfere():
    codes = [f"print({i} * {i})" for i in range(12)]
    results = list(map_parallel(run_program, codes, workers=4))
    assert [r.stdout.strip() for r in results] == [str(i * i) for i in range(12)]


def test_network_namespace_cuts_even_unguarded_code_off_the_host():
    """The second wall: without the guard (plain python), code in the namespace cannot reach a server
    that the host reaches."""
    prefix = network_namespace_prefix()
    if not prefix:
        pytest.skip("this host does not allow network namespaces (the in-process guard still holds)")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(5)
    port = server.getsockname()[1]
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True)
    thread.start()
    client = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')"
    inside = subprocess.run(
        [*prefix, sys.executable, "-c", client], capture_output=True, text=True, timeout=30
    )
    assert inside.returncode != 0 and "connected" not in inside.stdout
    outside = subprocess.run([sys.executable, "-c", client], capture_output=True, text=True, timeout=30)
    assert outside.stdout.strip() == "connected"
    thread.join(5)
    server.close()
    assert len(accepted) == 1  # only the host's connection arrived
