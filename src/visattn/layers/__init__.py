from .layout import ChannelsFirst, TokenSequence, pointwise

__all__ = ["ChannelsFirst", "TokenSequence", "pointwise"]
