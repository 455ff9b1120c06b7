"""Kubernetes: an Indexed Job of shards, then a Job that merges their results.

    python -m autograder kubernetes COURSE --shards N --image IMAGE --claim PVC
                                    [--parallelism P] [--jobs J] [--gpu] [--sandbox bwrap|unsandboxed]
                                    [--out DIR]

writes DIR/grade-job.yaml (completionMode: Indexed, N completions; pod i runs ``batch
/course --shard /N``, i from $JOB_COMPLETION_INDEX; backoffLimitPerIndex retries only the
shards that failed) and DIR/merge-job.yaml (``merge /course``), to apply once the first has
ended (README, "Grading on a cluster"). COURSE is only counted here, to size the shards;
in the pods the course directory is the PersistentVolumeClaim PVC, mounted at /course
(ReadWriteMany: every pod writes its students' results there).

The image (autograder/cluster/image/) holds the grader, the reference and the data, never
the secret: every pod reads it from the Secret ``captioning-grader-secret`` (key
``secret``), so that all shards seed the same hidden inputs as `make autograde` does.

Sandbox: bubblewrap needs user namespaces in the pod: ``--sandbox bwrap`` (the default)
asks for them (a user namespace for the pod, hostUsers: false; seccomp and AppArmor
unconfined; an unmasked /proc, which bwrap mounts for its pid namespace). Where a cluster
refuses those, ``--sandbox unsandboxed`` runs the grader with --allow-unsandboxed in a
locked-down pod (no capabilities, read-only root, non-root user): the pod is the boundary.
"""

import argparse
import sys
from pathlib import Path

from autograder import REPO_ROOT

NAME = "captioning"
SECRET_NAME = "captioning-grader-secret"
SECRET_KEY = "secret"
COURSE_MOUNT = "/course"
WORKDIR = "/opt/captioning"  # where the image holds the repository's grader files
RUN_AS = 1000  # the image's grader user (autograder/cluster/image/Containerfile)
# A failed shard is run again this often (it grades only what it had not stored).
BACKOFF_LIMIT_PER_INDEX = 2
# Exit status of a grader that cannot grade at all (autograder/__main__.py): no retry helps.
CANNOT_GRADE_EXIT = 2


def add_command(commands) -> None:
    """`python -m autograder kubernetes`: its arguments, and run() as args.run."""
    cmd = commands.add_parser("kubernetes", help="write an Indexed Job of shards and its merge Job",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.add_argument("course", type=Path, help="the course directory (to count its students)")
    cmd.add_argument("--shards", type=int, required=True)
    cmd.add_argument("--image", required=True, help="the grader's image (autograder/cluster/image/build.sh)")
    cmd.add_argument("--claim", required=True, help="the PersistentVolumeClaim holding the course directory")
    cmd.add_argument("--parallelism", type=int, help="pods at once (default: every shard)")
    cmd.add_argument("--jobs", type=int, default=1, help="submissions each pod grades at once")
    cmd.add_argument("--gpu", action="store_true", help="one nvidia.com/gpu per pod and --device cuda")
    cmd.add_argument("--sandbox", choices=["bwrap", "unsandboxed"], default="bwrap")
    cmd.add_argument("--namespace", help="metadata.namespace of both Jobs")
    cmd.add_argument("--out", type=Path, default=REPO_ROOT / "dist" / "kubernetes")
    cmd.set_defaults(run=run)


def resources(jobs: int, gpu: bool) -> dict:
    """Requests and limits of one shard's container (limits.py's rule, as for Slurm)."""
    from autograder.cluster import limits

    memory = f"{-(-limits.shard_memory_bytes(jobs) // 2**20)}Mi"
    limit = {"memory": memory, **({"nvidia.com/gpu": 1} if gpu else {})}
    return {"requests": {"cpu": str(jobs), "memory": memory}, "limits": limit}


def pod_security(sandbox: str) -> tuple[dict, dict, dict]:
    """(pod spec fields, pod securityContext, container securityContext) for the sandbox mode."""
    user = {"runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS}
    if sandbox == "bwrap":  # what bwrap needs to make its namespaces and mount /proc
        return ({"hostUsers": False},
                {**user, "seccompProfile": {"type": "Unconfined"}, "appArmorProfile": {"type": "Unconfined"}},
                {"procMount": "Unmasked", "allowPrivilegeEscalation": False})
    return ({}, {**user, "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
             "capabilities": {"drop": ["ALL"]}})


def pod_template(args, command: list[str], container_resources: dict) -> dict:
    """The pod of either Job: the image, the secret, the course volume, the sandbox's needs."""
    spec_fields, pod_context, container_context = pod_security(args.sandbox)
    container = {"name": "grader", "image": args.image, "workingDir": WORKDIR, "command": command,
                 "env": [{"name": "CAPTIONING_GRADER_SECRET",
                          "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": SECRET_KEY}}}],
                 "resources": container_resources, "securityContext": container_context,
                 "volumeMounts": [{"name": "course", "mountPath": COURSE_MOUNT}]}
    if args.sandbox == "unsandboxed":  # a read-only root: the sandbox-less grader still needs /tmp
        container["volumeMounts"].append({"name": "tmp", "mountPath": "/tmp"})
    volumes = [{"name": "course", "persistentVolumeClaim": {"claimName": args.claim}}]
    if args.sandbox == "unsandboxed":
        volumes.append({"name": "tmp", "emptyDir": {}})
    return {"metadata": {"labels": {"app": f"{NAME}-grader"}},
            "spec": {**spec_fields, "restartPolicy": "Never", "securityContext": pod_context,
                     "containers": [container], "volumes": volumes}}


def _metadata(args, name: str) -> dict:
    return {"name": name, "labels": {"app": f"{NAME}-grader"},
            **({"namespace": args.namespace} if args.namespace else {})}


def grade_job(args, students: int) -> dict:
    """The Indexed Job: pod i grades shard i of N; a failed index is retried on its own."""
    from autograder.cluster import limits

    parallelism = min(args.parallelism or args.shards, args.shards)
    command = ["python3", "-m", "autograder", "batch", COURSE_MOUNT, "--shard", f"/{args.shards}",
               "--jobs", str(args.jobs), "--device", "cuda" if args.gpu else "cpu",
               *(["--allow-unsandboxed"] if args.sandbox == "unsandboxed" else [])]
    waves = -(-args.shards // parallelism) * (1 + BACKOFF_LIMIT_PER_INDEX)
    deadline = waves * limits.shard_seconds(max(limits.shard_sizes(students, args.shards)), args.jobs)
    spec = {"completionMode": "Indexed", "completions": args.shards, "parallelism": parallelism,
            "backoffLimitPerIndex": BACKOFF_LIMIT_PER_INDEX, "activeDeadlineSeconds": deadline,
            # The grader's set-up is broken (no data, no sandbox): every retry would fail too.
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
                "containerName": "grader", "operator": "In", "values": [CANNOT_GRADE_EXIT]}}]},
            "template": pod_template(args, command, resources(args.jobs, args.gpu))}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _metadata(args, f"{NAME}-grade"), "spec": spec}


def merge_job(args, students: int) -> dict:
    """The Job that merges: the class's files from the stored results; grades nothing."""
    from autograder.cluster import limits, slurm

    command = ["python3", "-m", "autograder", "merge", COURSE_MOUNT]
    memory = f"{-(-2 * limits.BATCH_PROCESS_BYTES // 2**20)}Mi"
    seconds = slurm.MERGE_SECONDS + students * slurm.MERGE_SECONDS_PER_STUDENT
    spec = {"backoffLimit": 1, "activeDeadlineSeconds": seconds,
            "template": pod_template(args, command, {"requests": {"cpu": "1", "memory": memory},
                                                     "limits": {"memory": memory}})}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _metadata(args, f"{NAME}-merge"), "spec": spec}


def manifests(args) -> dict[str, dict]:
    """{file name: manifest}; ValueError for arguments that cannot work."""
    from autograder.cluster import limits

    students = limits.class_size(args.course)
    limits.check_shards(args.shards, students)
    if args.jobs < 1 or (args.parallelism is not None and args.parallelism < 1):
        raise ValueError("--jobs and --parallelism must be at least 1")
    return {"grade-job.yaml": grade_job(args, students), "merge-job.yaml": merge_job(args, students)}


def run(args) -> int:
    """The command: write both manifests (exit 2 with the reason for bad arguments)."""
    import yaml

    try:
        written = manifests(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name, manifest in written.items():
        (args.out / name).write_text(yaml.safe_dump(manifest, sort_keys=False))
    print(f"wrote {args.out / 'grade-job.yaml'} and {args.out / 'merge-job.yaml'}: apply the first, "
          "wait for it to end, then the second (README, 'Grading on a cluster')")
    return 0
