"""The grading pipeline: what runs on the instructor's side to score submissions."""
