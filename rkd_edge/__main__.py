"""``python -m rkd_edge`` (and ``torchrun -m rkd_edge``) is the ``rkd-edge`` command."""

from rkd_edge.cli import main

main()
