"""AgentDojo efficacy benchmark: AgentDojo's scripted attack pairs through `aarmor.Guard` (see README.md)."""
