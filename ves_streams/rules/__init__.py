"""The rule engine: YAML topologies (Barometer's dialect plus extensions) -> VES events.

No Faust, Kafka or HTTP in here: plain functions and immutable objects that
the CLI, the streaming agents and the tests share. The dialect, the
extensions and the header are documented in ``ves_streams/rules/DIALECT.md``.

Modules, in the order data flows through them:

``loader``    safe YAML -> node graph with file:line:col, tag checks
``header``    the optional ``ves-streams:`` header -> :class:`TopologyHeader`
``templates`` ``"{vl.plugin}-{vl.plugin_instance}"`` parsed once, rendered safely
``selectors`` SELECT / CONDITION matching over a per-host :class:`SampleIndex`
``compiler``  node graph -> plan (the immutable nodes of ``plan``)
``plan``      the nodes that render
``topology``  :class:`Topology`: render measurements, notifications, heartbeats
``ids``       what ``{system.id}`` renders
``errors``    :class:`RuleError` (load time), :class:`RenderError` (run time)
``commands``  ``ves-streams render`` and ``ves-streams check``
"""

from .errors import RenderError, RuleError, RulesError
from .header import TopologyHeader
from .ids import CounterIds, DeterministicIds, IdPolicy
from .topology import (
    AlarmPhase,
    RenderContext,
    RenderedEvent,
    RenderResult,
    Topology,
    fresh_samples,
    load_topology,
    loads_topology,
)

__all__ = [
    "load_topology",
    "loads_topology",
    "fresh_samples",
    "Topology",
    "TopologyHeader",
    "AlarmPhase",
    "RenderContext",
    "RenderResult",
    "RenderedEvent",
    "RuleError",
    "RenderError",
    "RulesError",
    "CounterIds",
    "DeterministicIds",
    "IdPolicy",
]
