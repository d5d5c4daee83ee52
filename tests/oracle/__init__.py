"""The domain core as it was before the lean core (issue 14 item 2), kept as the oracle
of tests/unit/test_core_differential.py: random streams of facts applied by this copy
and by services/domain must give identical states and publications.

A verbatim copy of services/domain at d5360e6 (imports rewritten; the value parsers and
`Rejected` are shared, they did not change). Never edit it to make a test pass: it is
the behaviour the lean core must keep. Delete it once it no longer earns its keep.
"""
