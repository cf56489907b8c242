"""The benchmark of issue 5 (`make bench`): a real server under a real load generator.

run.py drives it; queries.py counts SQL per request kind in-process; profile.py profiles one
request kind with pyinstrument; loadgen.py is the load generator used when wrk is absent.
"""
