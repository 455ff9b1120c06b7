"""The hidden reference solution. Never shipped to students; see captioning.py."""
