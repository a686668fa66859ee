"""Networks: backbones by name, the similarity/regression heads, the score loss."""

from .backbones import LEGACY, build_backbone
from .iqa import IQAModel, MultiHeadIQAModel, build_model
from .loss import FidelityLoss, IQALoss, make_loss

__all__ = ["LEGACY", "FidelityLoss", "IQALoss", "IQAModel", "MultiHeadIQAModel",
           "build_backbone", "build_model", "make_loss"]
