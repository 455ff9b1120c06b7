"""A one-node Slurm cluster on this machine, for tests: munged, slurmctld and slurmd started
as root from a temporary directory (their own key, socket, ports, state and logs), with no
cgroup plugin (proctrack/linuxproc, task/none), so that it runs in a container or a VM.

``start(folder)`` returns a Cluster, or raises Unavailable with the reason (not root, no
apt to install slurm-wlm and munge, a daemon that does not start): the tests skip with it.
"""

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo")
PACKAGES = ("slurm-wlm", "munge")


class Unavailable(RuntimeError):
    """No cluster can be started here; the message says why."""


def _installed() -> bool:
    return all(shutil.which(name) or Path("/usr/sbin", name).exists() for name in DAEMONS + CLIENTS)


def ensure_installed() -> None:
    """Install Debian's slurm-wlm and munge when missing (root with apt-get), else Unavailable."""
    if _installed():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("needs slurmctld, slurmd and munged: install slurm-wlm and munge "
                          "(this test installs them itself only as root with apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "install", "-y", "-q", *PACKAGES], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", *PACKAGES]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode == 0 and _installed():
            return
    raise Unavailable(f"apt-get could not install {' '.join(PACKAGES)}: {done.stderr[-500:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


CONF = """ClusterName=kittest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={dir}/munge.socket
CredType=cred/munge
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MpiDefault=none
ReturnToService=2
MinJobAge=3600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mib} State=UNKNOWN
PartitionName=kittest Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    dir: Path
    env: dict  # SLURM_CONF and the rest: for sbatch, squeue, scancel, scontrol

    def run(self, *command: str) -> str:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)}: {done.stderr}")
        return done.stdout

    def sbatch(self, *args: str) -> str:
        """The job id of a new batch job (of an array job: its id)."""
        return self.run("sbatch", "--parsable", *args).strip().split(";")[0]

    def active(self, job: str) -> bool:
        """The job (every task of an array) is still pending or running."""
        return bool(self.run("squeue", "-h", "-j", job, "-o", "%i").strip())

    def wait(self, job: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.active(job):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job} still active after {timeout:.0f} s:\n{self.logs()}")
            time.sleep(1)

    def exit_code(self, job: str) -> int:
        """A finished job's exit status (kept by slurmctld for MinJobAge)."""
        found = re.search(r"\bExitCode=(\d+):", self.run("scontrol", "show", "job", job))
        return int(found.group(1))

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n" + (self.dir / n).read_text()[-3000:]
                         for n in ("slurmctld.log", "slurmd.log") if (self.dir / n).exists())

    def stop(self) -> None:
        """End the daemons this cluster started, by their pid files."""
        for name in ("slurmd", "slurmctld", "munged"):
            pid_file = self.dir / f"{name}.pid"
            try:
                os.kill(int(pid_file.read_text().split()[0]), 15)
            except (OSError, ValueError):
                pass


def start(folder: Path) -> Cluster:
    """munged, slurmctld and slurmd for one node with this machine's CPUs; Unavailable if not."""
    if os.geteuid() != 0:
        raise Unavailable("starting slurmd (and munged) here needs root")
    ensure_installed()
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    memory_mib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20 - 1024
    conf = folder / "slurm.conf"
    conf.write_text(CONF.format(host=socket.gethostname().split(".")[0], dir=folder, ctld_port=_free_port(),
                                d_port=_free_port(), cpus=os.cpu_count(), memory_mib=memory_mib))
    cluster = Cluster(folder, {**os.environ, "SLURM_CONF": str(conf)})
    commands = [[_daemon("munged"), f"--key-file={key}", f"--socket={folder}/munge.socket", "--force",
                 f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log",
                 f"--seed-file={folder}/munged.seed"],
                [_daemon("slurmctld"), "-f", str(conf)], [_daemon("slurmd"), "-f", str(conf)]]
    for command in commands:
        done = subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=60)
        if done.returncode:
            cluster.stop()
            raise Unavailable(f"{Path(command[0]).name} did not start: {done.stderr[-500:]}")
    _wait_for_idle_node(cluster)
    return cluster


def _wait_for_idle_node(cluster: Cluster, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if "idle" in cluster.run("sinfo", "-h", "-o", "%T"):
                return
        except RuntimeError:
            pass  # slurmctld not answering yet
        time.sleep(0.5)
    cluster.stop()
    raise Unavailable(f"the node did not become idle within {timeout:.0f} s:\n{cluster.logs()}")
