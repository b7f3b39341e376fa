"""How tensors are computed: the ``compute:`` switches, non-finite loss handling, data parallelism under
``torchrun``, process lifetime, and the KL divergences every method uses."""
