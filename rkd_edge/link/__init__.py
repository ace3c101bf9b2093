"""Deploy over a real link: ``rkd-edge tx`` (images -> channel symbols -> UDP/TCP) and ``rkd-edge rx``
(frames -> optional simulated channel -> decoder -> predictions). Torch-free apart from ``split:`` sources.

Modules: :mod:`~rkd_edge.link.wire` (the versioned frame format and its history),
:mod:`~rkd_edge.link.transport` (UDP fragmentation and reassembly, TCP framing, sockets),
:mod:`~rkd_edge.link.sources` (images, folders, stdin, dataset splits), :mod:`~rkd_edge.link.tx`,
:mod:`~rkd_edge.link.rx`.
"""
