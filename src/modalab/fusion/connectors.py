"""Token-wise connectors from an encoder's feature space to a language model's (LLaVA).

``linear`` is one ``nn.Linear``; ``mlp`` is LLaVA's ``mlp2x_gelu`` (Linear-GELU-Linear). Both keep
the number of tokens; the Perceiver resampler (``resampler.py``) and the Q-Former (``qformer.py``)
turn any number of media tokens into a fixed number.

Every connector has the same call contract, so a model can swap them by name::

    tokens, mask = connector(media, media_mask)   # (B, N, D_in), (B, N) -> (B, M, D_out), (B, M) | None

``mask`` is ``True`` for real tokens; ``None`` means all tokens are real.
"""

from __future__ import annotations

from torch import Tensor, nn

from modalab.config import Section
from modalab.registry import register


class TokenProjector(nn.Module):
    """Applies ``proj`` to every media token and passes the mask through.

    Args:
        proj: any module mapping (.., D_in) -> (.., D_out).
    """

    def __init__(self, proj: nn.Module) -> None:
        super().__init__()
        self.proj = proj

    def forward(self, media: Tensor, media_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """media (B, N, D_in) -> ((B, N, D_out), media_mask)."""
        return self.proj(media), media_mask


def linear(in_dim: int, out_dim: int, bias: bool = True) -> TokenProjector:
    """One linear map per token (LLaVA ``linear``)."""
    return TokenProjector(nn.Linear(in_dim, out_dim, bias=bias))


def mlp(in_dim: int, out_dim: int, hidden_dim: int | None = None) -> TokenProjector:
    """Linear-GELU-Linear per token (LLaVA ``mlp2x_gelu``); hidden width defaults to ``out_dim``."""
    hidden = hidden_dim or out_dim
    return TokenProjector(nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)))


# --------------------------------------------------------------------------- builders
# The model builder supplies ``in_dim`` (encoder width) and ``out_dim`` (decoder width); the recipe
# section supplies the rest, validated by the schema.


class LinearConnectorConfig(Section):
    bias: bool = True


class MlpConnectorConfig(Section):
    hidden_dim: int | None = None


@register("connector", "linear", schema=LinearConnectorConfig)
def build_linear(in_dim: int, out_dim: int, bias: bool = True) -> TokenProjector:
    """Linear projection per media token (LLaVA linear)."""
    return linear(in_dim, out_dim, bias=bias)


@register("connector", "mlp", schema=MlpConnectorConfig)
def build_mlp(in_dim: int, out_dim: int, hidden_dim: int | None = None) -> TokenProjector:
    """Linear-GELU-Linear per media token (LLaVA mlp2x_gelu)."""
    return mlp(in_dim, out_dim, hidden_dim)
