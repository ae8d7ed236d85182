"""The failures a stage reports in one line (free of heavy imports: every stage loads this)."""


class ParamsError(ValueError):
    """A params.yaml value is missing, unknown or out of range: the message names its key."""


class DataError(RuntimeError):
    """The dataset could not be fetched, or its contents are unusable."""


class Diverged(RuntimeError):
    """A minibatch loss above train.max_loss, NaN or infinite."""

    def __init__(self, seed, step, loss):
        super().__init__(seed, step, loss)
        self.seed, self.step, self.loss = seed, step, loss

    def __str__(self):
        return f"seed {self.seed} diverged at step {self.step} (loss {self.loss:.4g})"
