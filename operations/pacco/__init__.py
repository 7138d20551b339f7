"""Pacco's order maker, the reference saga: the saga itself, ``POST /orders``, their models, and the
simulated Pacco services of the demo. The generic service never imports this package; only the
wiring and the command line do."""
