"""A real one-node SLURM cluster on localhost (Debian's slurm-wlm + munge), all state under one temp dir.

`LocalSlurm(root).start()` writes a munge key and slurm.conf, starts munged, slurmctld and slurmd, and
waits for the node to be idle; `stop()` ends exactly the daemons it started, by their pid files.
`missing()` names what this machine lacks (the test skips with it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "sinfo", "srun", "scancel")


def _sbin(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None
    )


def missing() -> str | None:
    absent = [name for name in (*DAEMONS, *CLIENTS) if _sbin(name) is None]
    if absent:
        return f"no local SLURM: {', '.join(absent)} not installed (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "no local SLURM: starting slurmd with SlurmUser=root needs root"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalSlurm:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.pids = {name: self.root / f"{name}.pid" for name in DAEMONS}

    @property
    def env(self) -> dict[str, str]:
        """Environment for the client commands (sbatch, scontrol): finds this cluster's config."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        for sub in ("munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        cpus = os.cpu_count() or 1
        mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)
        r = self.root
        self.conf.write_text(
            f"""ClusterName=infitest
SlurmctldHost={self.host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={self.pids["slurmctld"]}
SlurmdPidFile={self.pids["slurmd"]}
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=30
NodeName={self.host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _run(self, *cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True, text=True, env=self.env, timeout=60)

    def start(self, timeout: float = 60) -> LocalSlurm:
        self._write_config()
        m = self.root / "munge"
        self._run(
            _sbin("munged"),
            "--force",
            f"--key-file={m / 'munge.key'}",
            f"--socket={self.munge_socket}",
            f"--pid-file={self.pids['munged']}",
            f"--log-file={m / 'munged.log'}",
            f"--seed-file={m / 'munged.seed'}",
        )
        self._run(_sbin("slurmctld"), "-f", str(self.conf))
        self._run(_sbin("slurmd"), "-f", str(self.conf))
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env, timeout=30
            ).stdout.strip()
            if out == "idle":
                return self
            time.sleep(0.5)
        raise RuntimeError(
            f"the local SLURM node never became idle (sinfo: {out!r}); logs in {self.root}/log"
        )

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as key -> value."""
        out = subprocess.run(
            ["scontrol", "-o", "show", "job", job_id],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=30,
        ).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "munged"):
            pid_file = self.pids[name]
            if not pid_file.exists():
                continue
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                continue
            deadline = time.time() + 15
            while time.time() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
