"""Channel adapters. The core finds them by name through the ``bridge.channels`` entry points."""
