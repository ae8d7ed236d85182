"""Stage download: fetch names.txt (or take it from the offline cache) and verify its hash."""

import click

from actgrad.data import default_cache_dir, fetch_names, read_words
from actgrad.params import read_params

from .outputs import writing
from .stage import log, run_stage, stage_command


@click.command()
@click.option("--out", required=True, help="where names.txt goes")
@stage_command
def main(out):
    data = read_params().data
    cache = default_cache_dir()
    log(f"download: {data.url} (offline cache {cache})")
    text = fetch_names(data.url, data.sha256, cache).decode()
    read_words(text, data.url)  # refuse a file with no usable names here, not deep in training
    with writing() as outputs:
        outputs.text(out, text)
    log(f"download: wrote {out}")


if __name__ == "__main__":
    run_stage(main)
