"""``make bench``: the service's speed, measured end to end against local fakes."""
