"""Errors a user can act on: each carries one line that names the problem and the fix."""

# The fix named wherever a GPU study meets a host without a usable GPU.
SMOKE_HINT = "on a host without a GPU run the CPU smoke config: snakemake --cores 2 --configfile config/smoke.yaml"


class CtxEnergyError(Exception):
    """Base of every error that is printed as one line, without a traceback."""


class ConfigError(CtxEnergyError):
    """The configuration is invalid; raised before any GPU time is spent."""


class NoDeviceError(CtxEnergyError):
    """The configured device is not usable on this host."""


class EngineUnavailableError(CtxEnergyError):
    """The engine's Python package is not installed."""
