"""actgrad: the activations, gradients and BatchNorm study of a character-level MLP.

Importing it pins the CPU kernels the study computes with (kernels.py), before torch starts.
"""

from .kernels import pin

pin()
