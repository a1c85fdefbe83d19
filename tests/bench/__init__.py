"""`make bench`: the pipeline measured against this machine's physical limit, in one run."""
