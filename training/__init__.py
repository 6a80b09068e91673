"""Training for every zoo model: losses, metrics, schedules, data and the fit loop.

The package's contents arrive with the training issue; it exists now so that the
distribution's layout (`zoo`, `layers`, `training`) is the one of the design card.
"""
