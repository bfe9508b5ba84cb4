"""Who may talk to an agent and how much: access policies, pairing, rate limits and token
budgets (``[agents.access]``, ``[agents.limits]``)."""
