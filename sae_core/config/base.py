"""What every config section shares: unknown keys refused, field docstrings as descriptions, and the
error type whose messages name the dotted field and the value."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from sae_core.errors import SaeSweepError


class ConfigError(SaeSweepError, ValueError):
    """A configuration problem, phrased as `<dotted.field>: <problem> (got <value>)`."""


class Section(BaseModel):
    # forbid: a misspelt key in a YAML file must fail, not be silently ignored. allow_inf_nan=False:
    # YAML's `.inf`/`.nan` pass every `gt=0` bound and only fail mid-training (an OverflowError for
    # `epochs`, a NaN loss for `lr`), so every float of every section must be finite at load time.
    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        use_attribute_docstrings=True,
        allow_inf_nan=False,
    )
