"""Building the captioning data set (coco.pt) from a COCO 2017-style source; see coco.py."""
