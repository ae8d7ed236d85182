"""`actgrad`: use the project's trained models. Run it in the project's folder.

    actgrad sample VARIANT [-n 20] [--seed S] [--trained-seed T] [--temperature 1.0] [--top-k K]
    actgrad score NAME... [--variant V]... [--all]
    actgrad list
    actgrad worker ADDRESS [--nworkers N]

VARIANT is a variant of params.yaml, `deep/<config>`, `calibrate` (the BatchNorm variant with
its calibrated statistics) or `fold` (that model folded into W1 and b1). Each model is read
where dvc.lock says its stage wrote it, with torch.load(..., weights_only=True).
"""

import functools
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from .data.examples import Vocab
from .errors import ParamsError
from .params import load_yaml
from .pieces.norms import NoNorm
from .recipes import read_params
from .stats import mean_sd


@dataclass
class Model:
    logits_of: object  # contexts (N, block_size) -> logits (N, vocab)
    seed: int  # the seed it was trained with
    sample_seed: int  # the seed its stage samples names with


class Project:
    """The project's params, and what dvc.lock says each stage ran and wrote."""

    def __init__(self, folder="."):
        self.folder = Path(folder)
        if not (self.folder / "params.yaml").is_file():
            raise click.ClickException(
                f"{self.folder.resolve()} holds no params.yaml: run actgrad in the project's "
                "folder, or name it with --project"
            )
        try:
            self.params = read_params(self.folder / "params.yaml")
        except ParamsError as e:
            raise click.ClickException(str(e)) from None
        lock = self.folder / "dvc.lock"
        if not lock.is_file():
            raise click.ClickException(f"{lock}: no such file; `make repro` runs the pipeline")
        self.stages = load_yaml(lock.read_text())["stages"]

    def names(self):
        """Every model the project trains: its variants, calibrate, fold and deep configs."""
        return [
            *self.params.variants,
            "calibrate",
            "fold",
            *(f"deep/{c}" for c in self.params.deep),
        ]

    def stage(self, name):
        if name.startswith("deep/"):
            return f"deep@{name.removeprefix('deep/')}"
        return name if name in ("calibrate", "fold") else f"train@{name}"

    def path(self, stage, option):
        """The path that a stage's command in dvc.lock gives to --option."""
        if stage not in self.stages:
            raise click.ClickException(f"dvc.lock has no stage {stage}; `make repro` runs it")
        words = shlex.split(self.stages[stage]["cmd"])
        return self.folder / words[words.index(f"--{option}") + 1]

    def tensors(self, stage, option):
        import torch

        path = self.path(stage, option)
        if not path.is_file():
            raise click.ClickException(
                f"{path}: no such file; `dvc pull` fetches it from the DVC remote, or "
                f"`make repro` (`dvc repro {stage}`) makes it"
            )
        return torch.load(path, weights_only=True)

    def vocab(self):
        train = next(s for s in self.stages if s.startswith("train@"))
        path = self.path(train, "split") / "vocab.json"
        if not path.is_file():
            raise click.ClickException(f"{path}: no such file; `dvc pull` or `make repro`")
        return Vocab(json.loads(path.read_text())["chars"])

    def model(self, name, trained_seed=None):
        if name.startswith("deep/"):
            return self._deep(name.removeprefix("deep/"))
        if name not in ("calibrate", "fold") and name not in self.params.variants:
            choices = ", ".join(self.names())
            raise click.ClickException(f"{name}: no such model; choose one of {choices}")
        return self._mlp(name, trained_seed)

    def _mlp(self, name, trained_seed):
        from .mlp.network import Weights, logits

        params, stage = self.params, self.stage(name)
        variant = params.variant(params.calibrate.variant if stage == name else name)
        file = {"train": "model", "calibrate": "model", "fold": "folded"}[stage.split("@")[0]]
        weights = Weights.from_state_dict(self.tensors(stage, file))
        seed = weights.seeds[0] if trained_seed is None else trained_seed
        if seed not in weights.seeds:
            raise click.ClickException(
                f"--trained-seed {seed}: {name} was trained with seeds {list(weights.seeds)}"
            )
        s, stats = weights.seeds.index(seed), None
        if name == "calibrate":
            calibrated = self.tensors(stage, "statistics")
            stats = {k: calibrated[k][s] for k in ("mean", "std")}
        if name == "fold":
            variant = variant.model_copy(update={"norm": NoNorm()})
        model = functools.partial(logits, weights.seed_slice(s), variant=variant, stats=stats)
        return Model(model, seed, params.train.sample_seed)

    def _deep(self, config):
        from .deepnet.network import trained_logits

        params, stage = self.params, f"deep@{config}"
        if config not in params.deep:
            raise click.ClickException(
                f"deep/{config}: no such model; choose one of {', '.join(self.names())}"
            )
        metrics = json.loads(self.path(stage, "metrics").read_text())
        if metrics["diverged_at_step"]:
            raise click.ClickException(
                f"deep/{config} diverged at step {metrics['diverged_at_step']}: its network "
                "holds no finite weights to use"
            )
        train = params.deep_train
        cfg, block_size, vocab_size = (
            params.deep[config],
            params.split.block_size,
            len(self.vocab()),
        )
        model = trained_logits(cfg, train, block_size, vocab_size, self.tensors(stage, "model"))
        return Model(model, train.seeds[0], train.sample_seed)

    def status(self):
        """The stages `dvc status` finds out of date, or None if it cannot tell."""
        out = subprocess.run(
            [sys.executable, "-m", "dvc", "status", "--json"],
            cwd=self.folder,
            capture_output=True,
            text=True,
        )
        return set(json.loads(out.stdout)) if out.returncode == 0 else None


@click.group()
@click.option("--project", default=".", show_default=True, help="the project's folder")
@click.pass_context
def main(ctx, project):
    """Sample names from the project's trained models, score names, list the models."""
    ctx.obj = project


@main.command()
@click.argument("variant")
@click.option("-n", "count", type=click.IntRange(min=1), help="names [default: train.samples]")
@click.option("--seed", type=int, help="the sampler's seed [default: the stage's]")
@click.option("--trained-seed", type=int, help="which seed's model [default: the lecture's]")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0)
@click.option("--top-k", type=click.IntRange(min=1), help="draw from the k likeliest only")
@click.pass_obj
def sample(folder, variant, count, seed, trained_seed, temperature, top_k):
    """Print names drawn from a model, one character at a time as the lecture draws them: by
    default the train stage's samples of the variant (the notebook's, for deep/<config>)."""
    from .sampling import sample_names

    project = Project(folder)
    model = project.model(variant, trained_seed)
    count = count or project.params.train.samples
    seed = model.sample_seed if seed is None else seed
    block = project.params.split.block_size
    for name in sample_names(
        model.logits_of, project.vocab(), block, count, seed, temperature, top_k
    ):
        click.echo(name)


@main.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--variant", "variants", multiple=True, help="a model to score with (repeatable)")
@click.option("--all", "every", is_flag=True, help="every model (the default)")
@click.pass_obj
def score(folder, names, variants, every):
    """Print each name's mean negative log-likelihood per character (its end counted as one
    more), its perplexity, and the rank of each model by it (1: the least surprised)."""
    from .sampling import encode
    from .sampling import score as scores_of

    project = Project(folder)
    vocab, block = project.vocab(), project.params.split.block_size
    for name in names:
        try:
            encode(name, vocab, block)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    if variants and every:
        raise click.ClickException("--variant and --all: give one or the other")
    chosen = list(variants) or [n for n in project.names() if _usable(project, n)]
    table = {m: scores_of(project.model(m).logits_of, names, vocab, block) for m in chosen}
    width = max(len(m) for m in chosen)
    click.echo(f"{'name':<12}{'model':<{width + 2}}{'nll/char':>9}{'perplexity':>12}{'rank':>7}")
    for i, name in enumerate(names):
        ranked = sorted(chosen, key=lambda m: table[m][i][0])
        for m in chosen:
            nll, perplexity = table[m][i]
            rank = f"{ranked.index(m) + 1}/{len(chosen)}"
            click.echo(f"{name:<12}{m:<{width + 2}}{nll:>9.4f}{perplexity:>12.5g}{rank:>7}")


def _usable(project, name):
    """Whether a model trained without diverging (a deep config may not have)."""
    if not name.startswith("deep/"):
        return True
    metrics = project.path(project.stage(name), "metrics")
    return not json.loads(metrics.read_text())["diverged_at_step"]


@main.command(name="list")
@click.pass_obj
def list_models(folder):
    """Print every model, its train and val loss (mean ± sd over the seeds) from metrics/, and
    whether its model file is present and current (what `dvc status` says)."""
    project = Project(folder)
    stale = project.status()
    rows = []
    for name in project.names():
        stage = project.stage(name)
        metrics = json.loads(project.path(stage, "metrics").read_text())
        keys = ("", "folded_val_loss") if name == "fold" else ("train_loss", "val_loss")
        losses = [_mean_sd(metrics, k) for k in keys]
        file = {"fold": "folded"}.get(name, "model")
        present = project.path(stage, file).is_file()
        state = "absent" if not present else "present"
        if present and stale is not None:
            state += ", out of date" if stage in stale else ", current"
        rows.append((name, *losses, state))
    width = max(len(r[0]) for r in rows)
    click.echo(f"{'model':<{width + 2}}{'train':<20}{'val':<20}model file")
    for name, train, val, state in rows:
        click.echo(f"{name:<{width + 2}}{train:<20}{val:<20}{state}")


def _mean_sd(metrics, key):
    """A loss as "mean ± sd" over the seeds, the one value of a single run, "-" where there is
    none, and "diverged" where a seed diverged."""
    values = [s[key] for s in metrics.get("seeds", {}).values() if key in s]
    if None in values:
        return "diverged"
    if len(values) > 1:
        return mean_sd(values)
    if key not in metrics:
        return "-"
    return "diverged" if metrics[key] is None else f"{metrics[key]:.4f}"


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("address")
@click.argument("dask_options", nargs=-1, type=click.UNPROCESSED)
def worker(address, dask_options):
    """Start a Dask worker for the scheduler at ADDRESS that trains with the study's kernels:
    `dask worker ADDRESS --nthreads 1 --preload actgrad [DASK_OPTIONS]`, the kernel switches
    set, glibc's malloc left as it is and no profiler (compute.py says why)."""
    import dask
    from distributed.cli import dask_worker

    from .compute import WORKER_SETTINGS

    dask.config.set(WORKER_SETTINGS)
    dask_worker.main([address, "--nthreads", "1", "--preload", "actgrad", *dask_options])
