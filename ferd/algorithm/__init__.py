"""Algorithm 1 in rounds and what a run needs around it: the state crossing a round boundary, who owns an
output directory, every teacher source and PGD adversarial training, what an entry point checks first, and
``ferd bench``."""
