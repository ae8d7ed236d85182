"""Init schemes: how one weight tensor starts, from a randn draw of the seed's generator.

Every scheme is given the same draw, so all variants of a seed see the same minibatches
afterwards. params.yaml writes a scheme in short: a number (randn × number), a bare name
(kaiming, xavier, zeros), or {name: {its params}} ({kaiming: {gain: 1.41}}, {constant: 0.1}).
`tensor(drawn, fan_in, fan_out, activation_gain)` is the tensor the scheme makes of the draw.
"""

from typing import ClassVar, Literal

from pydantic import Field

from ..params import Section


class Init(Section):
    """The base of every init scheme."""

    name: str
    unnamed: ClassVar = ("name",)  # params.yaml names a scheme by its key: {kaiming: {gain: 2}}


class Randn(Init):
    """randn × scale: the lecture's hand-picked scales (a bare number in params.yaml)."""

    name: Literal["randn"] = "randn"
    scale: float

    def tensor(self, drawn, fan_in, fan_out, activation_gain):
        return drawn * self.scale

    def __str__(self):
        return f"randn x {self.scale:g}"


class Kaiming(Init):
    """randn × gain / √fan_in; the gain is the activation's unless given."""

    name: Literal["kaiming"] = "kaiming"
    gain: float | None = Field(None, gt=0)

    def tensor(self, drawn, fan_in, fan_out, activation_gain):
        gain = activation_gain if self.gain is None else self.gain
        return drawn * gain / fan_in**0.5

    def __str__(self):
        return "kaiming" if self.gain is None else f"kaiming {self.gain:g}"


class Xavier(Init):
    """randn × gain × √(2 / (fan_in + fan_out)); the gain is 1 unless given."""

    name: Literal["xavier"] = "xavier"
    gain: float | None = Field(None, gt=0)

    def tensor(self, drawn, fan_in, fan_out, activation_gain):
        gain = 1.0 if self.gain is None else self.gain
        return drawn * (gain * (2 / (fan_in + fan_out)) ** 0.5)

    def __str__(self):
        return "xavier" if self.gain is None else f"xavier {self.gain:g}"


class Zeros(Init):
    name: Literal["zeros"] = "zeros"

    def tensor(self, drawn, fan_in, fan_out, activation_gain):
        return drawn.new_zeros(drawn.shape)

    def __str__(self):
        return "zeros"


class Constant(Init):
    """The same value everywhere."""

    name: Literal["constant"] = "constant"
    value: float

    def tensor(self, drawn, fan_in, fan_out, activation_gain):
        return drawn.new_full(drawn.shape, self.value)

    def __str__(self):
        return f"constant {self.value:g}"
