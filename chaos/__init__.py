"""``make chaos``: events through the real producer API while processes and services are
killed and restarted, then a checker that proves nothing was lost (:mod:`chaos.checker`)."""
