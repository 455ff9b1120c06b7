"""What one shard needs (memory, time), derived from the limits the grader declares
(autograder/submission_sandbox.py, reference_service.py, batch.py): shared by the Slurm script and the
Kubernetes manifest, so that neither restates a number.
"""

import math
from pathlib import Path

from autograder import batch, reference_service, submission_sandbox

# Memory of one grading job: its sandbox's limit and the grader process beside it; the
# batch's own process (torch, the data) holds about as much as one grader process.
JOB_MEMORY_BYTES = batch.JOB_MEMORY_BYTES
BATCH_PROCESS_BYTES = batch.GRADER_PROCESS_BYTES
# The groups whose sandbox the grader serves reference behaviour to (its CPU time counts).
SERVED_GROUPS = sum(1 for group in submission_sandbox.WORKER_GROUPS if group.served)
# Units that may be judged again with correct collaborators, each served, in a second sandbox.
JUDGED_AGAIN = len(submission_sandbox.STUDENT_COLLABORATORS)


def seconds_per_submission() -> int:
    """The longest one grading takes when every unit runs to its own-time limit: the
    sandboxes' starts (the second for units judged again), each unit's limit, the
    reference's served computing. Not counted: a unit run again because the machine was
    too busy (UNIT_WALL_SECONDS), which a cluster's dedicated CPUs should not see; a shard
    cut short by it loses only what it had not stored."""
    units = len(submission_sandbox.UNITS) + JUDGED_AGAIN
    return (2 * submission_sandbox.STARTUP_SECONDS + units * submission_sandbox.UNIT_SECONDS
            + (SERVED_GROUPS + JUDGED_AGAIN) * math.ceil(reference_service.CPU_SECONDS))


def shard_sizes(students: int, shards: int) -> list[int]:
    """How many students each of the shards grades (batch.Shard's slices)."""
    return [len(batch.Shard(i, shards).select(list(range(students)))) for i in range(shards)]


def shard_seconds(largest_shard: int, jobs: int) -> int:
    """A time limit for a shard of largest_shard students graded jobs at a time: the batch's
    start (importing torch, the data, the encoder's features) and its rounds of gradings."""
    rounds = math.ceil(largest_shard / max(1, jobs))
    return submission_sandbox.STARTUP_SECONDS + rounds * seconds_per_submission()


def shard_memory_bytes(jobs: int) -> int:
    """Memory to request for a shard graded jobs at a time (batch.jobs_that_fit's rule)."""
    return max(1, jobs) * JOB_MEMORY_BYTES + BATCH_PROCESS_BYTES


def class_size(course: Path) -> int:
    """The number of student folders the batch would grade; an error when there are none."""
    students = len(batch.find_submissions(course))
    if students == 0:
        raise ValueError(f"{Path(course) / 'submitted'} holds no student folder: nothing to shard")
    return students


def check_shards(shards: int, students: int) -> None:
    """ValueError for a shard count that cannot work (less than 1, more than students)."""
    if shards < 1:
        raise ValueError(f"--shards must be at least 1, not {shards}")
    if shards > students:
        raise ValueError(f"--shards {shards} is more than the {students} students: some shards "
                         "would grade nobody; use at most one shard per student")
