"""The science core: noise ops and sites, the transform that injects them, samplers, compile, metrics.

Nothing here imports anything above it (pipeline, experiments, scenarios); layers defined elsewhere
register with :func:`vant.core.inject.register_site_types`.
"""
