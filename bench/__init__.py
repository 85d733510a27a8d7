"""``make bench``: the benchmark of the delivery path, and the tools ``make chaos`` shares.

* :mod:`bench.receiver`: a fast HTTP/1.1 receiver on 127.0.0.1 that records every webhook
  (id, endpoint path, arrival time, signature check, answer) and behaves per path;
* :mod:`bench.raw`: the plain single-process sender that gives ``raw_per_s``;
* :mod:`bench.stack`: the platform's own processes, started and always stopped;
* :mod:`bench.scenarios` and :mod:`bench.__main__`: the scenarios and the result line.
"""
