"""The runtime every serving process shares: it owns the engine, the Services, the
signals and the drain; a process is a list of fronts (serve.py, worker.py).

The reasoning at length: docs/internals.md, section "runtime/".
"""

from cai_judge.runtime.core import Front, FrontError, Runtime
from cai_judge.runtime.fronts import JobConsumerFront, MetricsFront

__all__ = ["Front", "FrontError", "JobConsumerFront", "MetricsFront", "Runtime"]
