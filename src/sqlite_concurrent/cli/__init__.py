"""The ``sqlite-concurrent`` command line (:mod:`.app`) and the modules only it uses: stress
workloads, the benchmark matrix and its chart, status, check and their display.

The library never imports this package; importing it starts nothing, so a spawned stress writer
that imports :mod:`.stress` does not load the command line's dependencies.
"""
