"""The gateway's rooms: contract, config, routing, render, jobs; ``compose`` wires them together."""
