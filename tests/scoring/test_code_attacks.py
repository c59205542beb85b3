"""Every escape found against the old Python-level guard (issue 14), and the classics, as programs
run in the sandbox: each ends with the expected status and leaves the host unchanged (no file
written or removed outside, no process left behind, no host process killed, no secret read, no
connection made). The harmless ones also run once WITHOUT the sandbox to show they are real."""

import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from megatron_infi.scoring.code import run_program

REPO = Path(__file__).resolve().parents[2]
README_LINE = [line for line in (REPO / "README.md").read_text().splitlines() if len(line) > 20][-1]
DELAY_S = 1  # an escaped process acts this long after the sandbox ends


@dataclass
class Attack:
    program: str  # formatted with the Host's fields
    status: str
    harmless_unsandboxed: bool = True  # safe to run without the sandbox as a control
    timeout_s: float = 2


ATTACKS = {
    "guard off by a frame walk, then a write outside": Attack(
        "import sys\nframe = sys._getframe()\nwhile frame.f_back:\n    frame = frame.f_back\n"
        "for name in ('BLOCK', 'PATH_ARGS'):\n    frame.f_globals.get(name, set()).clear()\n"
        "open('{target}/escaped.txt', 'w').write('x')",
        "failed",
    ),
    "os.open with dir_fd": Attack(
        "import os\nd = os.open('{target}', os.O_RDONLY | os.O_DIRECTORY)\n"
        "os.write(os.open('escaped.txt', os.O_WRONLY | os.O_CREAT, dir_fd=d), b'x')",
        "failed",
    ),
    "os.remove with dir_fd": Attack(
        "import os\nos.remove('keep.txt', dir_fd=os.open('{target}', os.O_RDONLY | os.O_DIRECTORY))",
        "failed",
    ),
    "os.mkdir with dir_fd": Attack(
        "import os\nos.mkdir('escaped', dir_fd=os.open('{target}', os.O_RDONLY | os.O_DIRECTORY))",
        "failed",
    ),
    "sqlite3.connect outside": Attack(
        "import sqlite3\nsqlite3.connect('{target}/escaped.db').execute('create table t (x)')", "failed"
    ),
    "os.mkfifo outside": Attack("import os\nos.mkfifo('{target}/escaped.fifo')", "failed"),
    # fork_exec's 23 arguments as in Python 3.12's subprocess
    "setsid daemon through _posixsubprocess.fork_exec": Attack(
        "import _posixsubprocess, os\n"
        "_posixsubprocess.fork_exec([b'/bin/sh', b'-c', b'sleep {delay}; echo x > {target}/escaped.txt', "
        "b'{token}'], [b'/bin/sh'], False, (), None, None, -1, -1, -1, -1, -1, -1, *os.pipe(), "
        "False, True, -1, None, None, None, -1, None, False)",
        "blocked",
    ),
    "ctypes system() found through /proc/self/maps": Attack(
        "import ctypes\nlibc = next(line.split()[-1] for line in open('/proc/self/maps') if 'libc' in line)\n"
        "ctypes.CDLL(libc).system(b'echo x > {target}/escaped.txt')",
        "failed",
    ),
    "ctypes system() of the loaded C library": Attack(
        "import ctypes\nctypes.CDLL(None).system(b'echo x > {target}/escaped.txt')", "blocked"
    ),
    "a host process's secret through /proc/<pid>/environ": Attack(
        "print(open('/proc/{victim}/environ').read())", "failed"
    ),
    "the caller's secret through the inherited environment": Attack(
        "import os\nprint(os.environ)\nassert '{secret}' not in str(os.environ)",
        "passed",
        harmless_unsandboxed=False,
    ),
    "kill the caller": Attack("import os, signal\nos.kill({caller}, signal.SIGKILL)", "failed", False),
    "kill its parent": Attack("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", "passed", False),
    "kill a host process": Attack("import os, signal\nos.kill({victim}, signal.SIGKILL)", "failed"),
    "connect to a host server": Attack(
        "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)", "blocked"
    ),
    "fetch a URL": Attack(
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)", "blocked"
    ),
    "fork bomb (bounded to 2**6 in case the sandbox fails)": Attack(
        "import os, time\nfor _ in range(6):\n    os.fork()\ntime.sleep(30)", "blocked", False
    ),
    "a write to the host's /tmp lands in its own": Attack(
        "open('/tmp/{token}.txt', 'w').write('x')\nprint(open('/tmp/{token}.txt').read())", "passed"
    ),
    "read the repo": Attack("print(open('{repo}/README.md').read())", "failed"),
    "delete the interpreter": Attack("import os, sys\nos.remove(sys.executable)", "failed", False),
    "fill memory through /dev/shm": Attack(
        "open('/dev/shm/fill', 'wb').write(bytes(1 << 20))", "failed", False
    ),
    "write outside its work dir, at /": Attack("open('/escaped.txt', 'w').write('x')", "failed", False),
    "thread bomb (bounded by the address space)": Attack(
        "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()",
        "failed",
        False,
    ),
    "fill the disk": Attack(
        "for i in range(8):\n    open(f'/work/fill{{i}}', 'wb').write(bytes(15 << 20))", "failed", False
    ),
    "outlive the sandbox by exec": Attack(
        "import os\nos.execv('/usr/bin/sleep', ['sleep', '600', '{number_token}'])", "timeout", False, 0.1
    ),
}


class Host:
    """What the attacks aim at, and whether any of it changed."""

    def __init__(self, tmp_path: Path):
        self.target = tmp_path / "host"
        self.target.mkdir()
        (self.target / "keep.txt").write_text("keep")
        self.token = f"infi-{secrets.token_hex(8)}"
        self.number_token = f"0.{secrets.randbelow(10**12):012d}"  # sleep accepts it as a duration
        self.secret = f"secret-{secrets.token_hex(8)}"
        self.victim = subprocess.Popen(["sleep", "120"], env={"INFI_SECRET": self.secret})
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.setblocking(False)
        self.fields = {
            "target": self.target,
            "token": self.token,
            "number_token": self.number_token,
            "secret": self.secret,
            "victim": self.victim.pid,
            "caller": os.getpid(),
            "port": self.server.getsockname()[1],
            "delay": DELAY_S,
            "repo": REPO,
        }

    def close(self) -> None:
        self.victim.kill()
        self.victim.wait()
        self.server.close()

    def processes_with_token(self) -> list[int]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if self.token.encode() in cmdline or self.number_token.encode() in cmdline:
                found.append(int(pid))
        return found

    def changes(self, output: str, delayed: bool) -> list[str]:
        """Every way the host differs from before the attack, or leaked to its output (`delayed`:
        after the time an escaped process would wait before acting)."""
        if delayed:
            time.sleep(DELAY_S + 1)
        changes = []
        entries = sorted(p.name for p in self.target.iterdir())
        if entries != ["keep.txt"] or (self.target / "keep.txt").read_text() != "keep":
            changes.append(f"target dir now {entries}")
        if Path(f"/tmp/{self.token}.txt").exists():
            changes.append("file in the host's /tmp")
        if self.victim.poll() is not None:
            changes.append("host process killed")
        if self.secret in output:
            changes.append("secret read")
        if README_LINE in output:
            changes.append("repo read")
        if leftover := self.processes_with_token():
            changes.append(f"processes left: {leftover}")
        try:
            self.server.accept()[0].close()
            changes.append("a connection reached the host")
        except BlockingIOError:
            pass
        return changes


@pytest.fixture
def host(tmp_path, monkeypatch):
    host = Host(tmp_path)
    monkeypatch.setenv("INFI_SECRET", host.secret)  # the caller's own secret must not reach the program
    yield host
    for pid in host.processes_with_token():
        os.kill(pid, signal.SIGKILL)
    Path(f"/tmp/{host.token}.txt").unlink(missing_ok=True)
    host.close()


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_is_contained(name, host):
    attack = ATTACKS[name]
    result = run_program(attack.program.format(**host.fields), timeout_s=attack.timeout_s, memory_mb=512)
    assert result.status == attack.status, (result.status, result.returncode, result.stderr[-600:])
    assert host.changes(result.stdout + result.stderr, "{delay}" in attack.program) == []


@pytest.mark.parametrize("name", [name for name, attack in ATTACKS.items() if attack.harmless_unsandboxed])
def test_attack_escapes_without_the_sandbox(name, host):
    """The control: unsandboxed, the same program changes the host (so the test above can fail)."""
    attack = ATTACKS[name]
    result = run_program(
        attack.program.format(**host.fields), timeout_s=attack.timeout_s, unsafe_no_sandbox=True
    )
    assert host.changes(result.stdout + result.stderr, "{delay}" in attack.program), (
        result.status,
        result.stderr[-600:],
    )
