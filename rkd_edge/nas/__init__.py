"""KDL-DARTS: the search space (operations, cells), the architecture step, the cost term, and deriving a
genotype (architectures are data: a genotype serialises to JSON)."""
