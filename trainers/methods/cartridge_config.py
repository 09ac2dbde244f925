"""The cartridge's own config section (`cartridge.tokens`, ...), read as `cfg.cartridge`. Apart from the
recipe (trainers/methods/cartridge.py) so that checking a config imports no torch.

    python -c "from trainers.methods.cartridge_config import CartridgeSection; print(CartridgeSection())"
"""
from __future__ import annotations

from dataclasses import dataclass, field

from trainers.config import check_positive, option


@dataclass(frozen=True)
class CartridgeSection:
    """The cartridge's config section (`cartridge.tokens`, ...), read as cfg.cartridge; it reads cd's
    temperature and kl_over too."""
    tokens: int = field(default=64, metadata=option(
        "key/value prefix length p of a cartridge (method cartridge): the first p tokens of the demonstrations "
        "initialise it (at most the context's length)", cli="cartridge-tokens"))
    frozen_tokens: int = field(default=1, metadata=option(
        "the cartridge's first positions kept fixed during training (an attention sink)", cli="cartridge-frozen-tokens"))

    def __post_init__(self):
        check_positive("cartridge.tokens", self.tokens)
        check_positive("cartridge.frozen_tokens", self.frozen_tokens, allow_zero=True)
