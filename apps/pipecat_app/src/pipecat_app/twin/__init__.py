"""TwinService: memory, tools and mixture-of-experts routing for the assistant.

Modules, one job each: :mod:`.config` (the ``[twin]`` config), :mod:`.memory`
(SQLite memory), :mod:`.toolbox` (the tool framework: schemas, validation,
timeouts, errors), :mod:`.tools` (the built-in tools), :mod:`.discovery`
(experts from config or Consul), :mod:`.cluster` (experts, vision
service and prompt, followed once per process), :mod:`.router` (which expert answers),
:mod:`.prompt` (system prompt from a file or Consul KV), :mod:`.llm`
(streaming to an expert) and :mod:`.service` (the pipecat stage tying them
together).
"""

from pipecat_app.twin.cluster import ClusterView
from pipecat_app.twin.config import TwinConfig
from pipecat_app.twin.service import TwinService

__all__ = ["ClusterView", "TwinConfig", "TwinService"]
