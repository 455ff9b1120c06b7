# One-command set-up and test for the captioning kit. Run `make help` for the list.
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
COCO_SOURCE ?= ../shared/data/coco_mini
COCO_PT     := data/coco.pt
# Some machines' pip settings (a config file, or PIP_FIND_LINKS) point at a CPU-only torch
# wheel that has no matching torchvision; install the pinned pair from PyPI regardless.
PIP_ENV     ?= env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null
COURSE      := assignment
ASSIGNMENT  := rnn_captioning
SOURCE_NB   := $(COURSE)/source/$(ASSIGNMENT)/$(ASSIGNMENT).ipynb
# nbgrader runs helper programs (alembic) by name: the venv's bin must come first on PATH.
NBGRADER    := cd $(COURSE) && PATH="$(abspath $(VENV))/bin:$$PATH" nbgrader

.PHONY: help setup sandbox data notebook release grade autograde merge slurm kubernetes image feedback gradescope similarity mutants bench-similarity test test-fast lint bench-train bench-lstm bench-grading bench-load bench-notebook bench lock clean

help:
	@echo "make setup        create $(VENV), install pinned packages, build $(COCO_PT)"
	@echo "make test         lint, then the whole test suite (CI runs this; about 20 minutes on 2 cores)"
	@echo "make test-fast    lint, then every test but the slow ones (about 2 minutes)"
	@echo "make lint         ruff check (settings in pyproject.toml)"
	@echo "make notebook     rebuild $(SOURCE_NB) from its text source and the reference"
	@echo "make release      generate the student version with nbgrader ($(COURSE)/release/)"
	@echo "make grade NB=f   grade one submitted notebook: a table and results.json (RESULTS=...)"
	@echo "make autograde    grade every submission in $(COURSE)/submitted/ (JOBS=N at a time,"
	@echo "                  resumable; FORCE=1 or STUDENTS=\"id ...\" to grade again) into the"
	@echo "                  gradebook; export $(COURSE)/grades.csv"
	@echo "make slurm SHARDS=N   sbatch scripts: an array job of N shards and a dependent merge (dist/slurm/;"
	@echo "                  GPU=1, SLURM_ARGS=...); make merge after shards graded elsewhere"
	@echo "make merge        the class's CSV and gradebook from stored results (grades nothing;"
	@echo "                  fails, listing them, when a student has no result)"
	@echo "make kubernetes SHARDS=N IMAGE=... CLAIM=...  an Indexed Job and a merge Job (dist/kubernetes/)"
	@echo "make image        the grader's container image from Debian and PyPI (podman, mmdebstrap)"
	@echo "make feedback     nbgrader feedback (HTML) for every autograded submission"
	@echo "make similarity   which submissions of $(COURSE)/submitted/ look alike: $(COURSE)/similarity/"
	@echo "                  similarity.html and .csv, for a person to review (CORPUS=dir of public solutions)"
	@echo "make mutants      how good the hidden tests are: every mutant of the reference graded"
	@echo "                  (MUTANT_JOBS=2 at a time; UNITS=\"name ...\"): mutants/out/report.html and CSVs"
	@echo "make gradescope   the Gradescope autograder zip (dist/; GRADESCOPE_SANDBOX=unsandboxed"
	@echo "                  where Gradescope's containers cannot run bubblewrap)"
	@echo "make data         rebuild $(COCO_PT) from COCO_SOURCE=$(COCO_SOURCE)"
	@echo "make bench-train  the notebook's overfitting recipe with each cell type and 3 seeds (CPU): losses, targets"
	@echo "make bench-lstm   time the reference LSTM against torch.nn.LSTM"
	@echo "make bench-grading  grading time: one submission, a class (JOBS=1, 2), stock nbgrader, notebook"
	@echo "make bench-load   a class graded quietly, then 3 times beside 4 CPU-bound processes: same verdicts?"
	@echo "make bench-similarity  the similarity report of a generated class of 300"
	@echo "make bench-notebook  training at 1 and 2 threads, and the whole notebook, quiet and beside 4 CPU-bound processes"
	@echo "make bench        bench-grading, bench-load, bench-lstm, bench-train and bench-notebook"
	@echo "make lock         regenerate requirements.lock from the working $(VENV) (pip freeze)"
	@echo ""
	@echo "Maintenance, no target (the venv's Python, or '. $(VENV)/bin/activate' first):"
	@echo "after changing the inputs of a visible check: write expected_NAME = EXPECTED in"
	@echo "                  $(COURSE)/$(ASSIGNMENT)_notebook.py, run"
	@echo "                  $(PY) -m assignment.build_notebook --fill-expected, then make notebook"
	@echo "points rule:      autograder/points.toml must total 100 (the grader, make notebook and"
	@echo "                  make release refuse otherwise); make notebook after changing it"

setup: $(VENV)/.installed $(COCO_PT) sandbox

# The grader isolates student code with bubblewrap. Install it where this user can (root
# with apt); elsewhere say how, since grading refuses to run without it unless told to.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get install -y -q bubblewrap >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null)); } \
	  || echo "warning: bubblewrap (bwrap) is not installed; install it (apt-get install bubblewrap)" \
	          "or grading will need --allow-unsandboxed" >&2

$(VENV)/.installed: requirements.txt requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_ENV) $(PY) -m pip install --quiet -r requirements.txt -c requirements.lock
	@$(PY) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
	  || { echo "error: torch and torchvision in $(VENV) do not import together (a CPU-only torch"\
	       "wheel from local pip settings?). Run 'make clean setup'." >&2; exit 1; }
	touch $@

$(COCO_PT): data/coco.py | $(VENV)/.installed
	$(PY) -m data.coco --source $(COCO_SOURCE) --out $@

data: | $(VENV)/.installed
	$(PY) -m data.coco --source $(COCO_SOURCE) --out $(COCO_PT)

notebook: | $(VENV)/.installed
	$(PY) -m assignment.build_notebook

# The student version: stubs in place of solutions, no outputs; coco.pt ships with it.
release: setup
	$(PY) -m assignment.build_notebook --check
	cp $(COCO_PT) $(COURSE)/source/$(ASSIGNMENT)/coco.pt
	$(NBGRADER) generate_assignment $(ASSIGNMENT) --force --log-level=WARN
	@echo "Student notebook: $(COURSE)/release/$(ASSIGNMENT)/$(ASSIGNMENT).ipynb (with captioning_helpers.py and coco.pt)"

NB      ?=
RESULTS ?= results.json
DEVICE  ?= cpu
grade: setup
	@test -n "$(NB)" || { echo "usage: make grade NB=path/to/submission.ipynb [RESULTS=results.json] [DEVICE=cpu|cuda|auto]" >&2; exit 2; }
	$(PY) -m autograder grade "$(NB)" --results "$(RESULTS)" --device $(DEVICE)

# Every submission in submitted/<student>/$(ASSIGNMENT)/: graded JOBS at a time (resumable;
# FORCE=1 grades everyone again, STUDENTS="id1 id2" those students), then into nbgrader's
# gradebook (nbgrader reuses the stored results, reading the batch's copy of each submission,
# which it can always process) and grades.csv. nbgrader export runs whatever happened before
# it; the target then fails if anything did (3: some submissions are NOT GRADED).
JOBS     ?= 1
FORCE    ?=
STUDENTS ?=
BATCH_ARGS = --jobs $(JOBS) --device $(DEVICE) $(if $(FORCE),--force) $(foreach s,$(STUDENTS),--student $(s))
autograde: release
	@status=0; \
	$(PY) -m autograder batch $(COURSE) $(BATCH_ARGS) || status=$$?; \
	if [ $$status -ne 0 ] && [ $$status -ne 3 ]; then exit $$status; fi; \
	( $(NBGRADER) autograde $(ASSIGNMENT) --force --log-level=WARN \
	    --CourseDirectory.submitted_directory=grader_results/nbgrader_input ) \
	  || { echo "error: nbgrader autograde failed (above); exporting what the gradebook holds" >&2; status=1; }; \
	( $(NBGRADER) export --to grades.csv ) || exit $$?; \
	echo "Grades: $(COURSE)/grades.csv and, per test, $(COURSE)/class_results.csv (gradebook: $(COURSE)/gradebook.db)"; \
	exit $$status

# Past one machine (README, "Grading on a cluster"): shards graded by Slurm or Kubernetes
# store results as `make autograde` does; merge builds class_results.csv, then nbgrader's
# gradebook and grades.csv from them, and grades nothing (exit 4 when a result is missing).
SHARDS     ?=
GPU        ?=
SLURM_ARGS ?=
IMAGE      ?= captioning-grader:latest
CLAIM      ?= captioning-course
K8S_ARGS   ?=
merge: release
	$(PY) -m autograder merge $(COURSE)

slurm: release
	@test -n "$(SHARDS)" || { echo "usage: make slurm SHARDS=N [JOBS=J] [GPU=1] [SLURM_ARGS=...]" >&2; exit 2; }
	$(PY) -m autograder slurm $(COURSE) --shards $(SHARDS) --jobs $(JOBS) $(if $(GPU),--gpu) $(SLURM_ARGS)

kubernetes: | $(VENV)/.installed
	@test -n "$(SHARDS)" || { echo "usage: make kubernetes SHARDS=N [IMAGE=...] [CLAIM=pvc] [K8S_ARGS=...]" >&2; exit 2; }
	$(PY) -m autograder kubernetes $(COURSE) --shards $(SHARDS) --jobs $(JOBS) --image $(IMAGE) \
	    --claim $(CLAIM) $(if $(GPU),--gpu) $(K8S_ARGS)

image: setup
	autograder/cluster/image/build.sh $(IMAGE)

feedback: | $(VENV)/.installed
	$(NBGRADER) generate_feedback $(ASSIGNMENT) --force
	@echo "Feedback: $(COURSE)/feedback/<student>/$(ASSIGNMENT)/$(ASSIGNMENT).html"

# Evidence for a person to review, never a verdict: it changes no grade.
CORPUS ?=
# Mutation analysis of the hidden tests (mutants/run.py): resumable, like autograde.
MUTANT_JOBS ?= 2
mutants: setup
	$(PY) -m autograder mutants --jobs $(MUTANT_JOBS) $(foreach u,$(UNITS),--unit $(u))

similarity: | $(VENV)/.installed
	$(PY) -m autograder similarity $(COURSE) $(if $(CORPUS),--reference-corpus "$(CORPUS)")

GRADESCOPE_SANDBOX ?= bwrap
gradescope: setup
	$(PY) -m autograder.gradescope --out dist/gradescope_autograder.zip --sandbox $(GRADESCOPE_SANDBOX)

test: setup lint
	$(PY) -m pytest

# Every test but the slow ones (whole gradings, batches, nbgrader, the notebook, the command
# line): about 2 minutes here, for every change; CI runs the whole suite.
test-fast: setup lint
	$(PY) -m pytest -m "not slow"

lint: | $(VENV)/.installed
	$(PY) -m ruff check .

bench-train: setup
	$(PY) -m benchmarks.overfit

bench-lstm: setup
	$(PY) -m benchmarks.lstm_speed

bench-grading: setup
	$(PY) -m benchmarks.grading

bench-similarity: | $(VENV)/.installed
	$(PY) -m benchmarks.similarity

bench-load: setup
	$(PY) -m benchmarks.load

bench-notebook: setup
	$(PY) -m benchmarks.notebook

bench: bench-grading bench-load bench-lstm bench-train bench-notebook

lock: $(VENV)/.installed
	{ echo "# Generated by 'make lock' from a working $(VENV): every installed version, used as constraints."; \
	  $(PY) -m pip freeze --exclude-editable; } > requirements.lock

clean:
	rm -rf $(VENV) $(COCO_PT) dist $(COURSE)/release $(COURSE)/gradebook.db $(COURSE)/source/$(ASSIGNMENT)/coco.pt
