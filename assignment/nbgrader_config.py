# nbgrader configuration of the course directory (this folder). Run nbgrader from here, or
# through the Makefile (`make release`, `make autograde`).
c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.course_id = "rnn_captioning"
c.CourseDirectory.root = __file__.rsplit("/", 1)[0]
# The data file and Python caches stay out of submissions and feedback.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback"]
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
